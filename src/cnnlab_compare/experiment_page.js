(function () {
  "use strict";
  const specs = JSON.parse(document.getElementById("specs").textContent);
  const views = [];
  const options = {renderer: "canvas",
                   actions: {export: true, source: false, compiled: false, editor: false}};
  Promise.all(Object.keys(specs).map((id) => vegaEmbed("#" + id, specs[id], options)
    .then((result) => { views.push(result.view); })))
    .then(() => { document.body.dataset.rendered = String(Math.round(performance.now())); },
          (error) => { document.body.dataset.error = String(error); throw error; });

  for (const table of document.querySelectorAll("table.sortable")) {
    const body = table.tBodies[0];
    const heads = Array.from(table.tHead.rows[0].cells);
    heads.forEach((head, column) => head.querySelector("button").addEventListener("click", () => {
      const ascending = head.getAttribute("aria-sort") !== "ascending";
      heads.forEach((h) => h.removeAttribute("aria-sort"));
      head.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const numeric = head.dataset.type === "num";
      const key = (row) => {
        const cell = row.cells[column];
        if (!numeric) return cell.textContent;
        const text = cell.dataset.sort;
        return text === undefined || text === "" ? NaN : Number(text);
      };
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const x = key(a), y = key(b);
        if (numeric) {  // blanks (failed, diverged, not run) last either way
          if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) - Number.isNaN(y);
          return ascending ? x - y : y - x;
        }
        return ascending ? x.localeCompare(y) : y.localeCompare(x);
      });
      body.append(...rows);
    }));
  }

  for (const input of document.querySelectorAll("input[data-filter]")) {
    const rows = document.getElementById(input.dataset.filter).tBodies[0].rows;
    input.addEventListener("input", () => {
      const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      for (const row of rows) {
        const text = row.textContent.toLowerCase();
        row.hidden = !words.every((word) => text.includes(word));
      }
    });
  }

  let picked = null;
  const experimentRows = document.querySelectorAll("#experiments tbody tr");
  for (const row of experimentRows) {
    row.addEventListener("click", () => {
      picked = picked === row.dataset.line ? null : row.dataset.line;
      for (const r of experimentRows) {
        r.classList.toggle("picked", picked !== null && r.dataset.line === picked);
      }
      for (const view of views) view.signal("highlight", picked).runAsync();
    });
  }
})();
