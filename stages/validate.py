"""validate: every param checked at once, before any other stage starts.

Every other stage depends on this stage's output, so DVC runs it first: a bad `-S` value stops
`dvc repro` here, with every problem listed, before DVC deletes any output or a stage command
that interpolates a name can run. Its output holds no params, so it never changes and a valid
change reruns only the stages that read the changed keys.
"""

from __future__ import annotations

from common import PARAMS_OK, run_stage

from cnnlab.params import load_params


def main() -> None:
    from cnnlab.files import write_text

    params = load_params()
    write_text(PARAMS_OK, "params.yaml is valid\n")  # constant: reruns nothing downstream
    runs = len(params.models) * len(params.datasets)
    print(f"params.yaml is valid: {runs} run{'' if runs == 1 else 's'} to train")


if __name__ == "__main__":
    run_stage(main, 0, "python stages/validate.py")
