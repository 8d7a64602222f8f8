"""validate: every param checked at once, before any other stage starts.

Every other stage depends on this stage's output, so DVC runs it first: a bad `-S` value stops
`dvc repro` here, with every problem listed, before DVC deletes any output or a stage command
that interpolates a name can run. Its output holds no params, so it never changes and a valid
change reruns only the stages that read the changed keys.
"""

from __future__ import annotations

from common import PARAMS_OK, SOURCES, run_stage

from cnnlab.params import ParamsError, load_params


def main() -> None:
    from cnnlab.data.catalog import is_folder
    from cnnlab.files import write_text

    params = load_params()
    # DVC would stop later, on download@<name>'s missing dep, with only "No such file".
    missing = [n for n in params.datasets if is_folder(n) and not (SOURCES / n).is_dir()]
    if missing:
        raise ParamsError(
            "; ".join(
                f"datasets: got {name!r}: a dataset of your own images, but there is no folder "
                f"{SOURCES / name}/; put its images in {SOURCES / name}/<class>/<image> (or fix "
                "the name, or take it out of `datasets`)"
                for name in missing
            )
        )
    write_text(PARAMS_OK, "params.yaml is valid\n")  # constant: reruns nothing downstream
    runs = len(params.models) * len(params.datasets)
    print(f"params.yaml is valid: {runs} run{'' if runs == 1 else 's'} to train")


if __name__ == "__main__":
    run_stage(main, 0, "python stages/validate.py")
