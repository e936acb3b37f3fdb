"""`i3d-jax report`: curves as a PNG and the final figures as a markdown table."""
import json

import numpy as np
import pytest

from i3d_jax.cli import main


def write_run(workdir, losses, evals):
    workdir.mkdir(parents=True)
    rows = [{"step": s, "kind": "train", "loss": loss, "accuracy": 1 - loss / 3,
             "learning_rate": 0.1} for s, loss in enumerate(losses, 1)]
    rows += [{"step": s, "kind": "eval", "top1": t, "top5": min(1.0, t + 0.3),
              "mean_class_accuracy": t - 0.01, "num_examples": 16} for s, t in evals]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_report(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", *map(str, args)])
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_report_of_two_runs(tmp_path, capsys):
    from PIL import Image

    write_run(tmp_path / "a" / "run", [2.0, 1.5, 1.0], [(3, 0.5)])
    write_run(tmp_path / "b" / "run", [2.1, 1.9], [(1, 0.25), (2, 0.375)])
    code, table, _ = run_report([tmp_path / "a" / "run", tmp_path / "b" / "run",
                                 "--markdown", tmp_path / "table.md",
                                 "--out", tmp_path / "curves.png"], capsys)
    assert code == 0
    lines = table.strip().splitlines()
    # Names told apart by their parent folders; the last rows' figures, in percent.
    assert lines[2] == "| a/run | 3 | 1.0000 | 66.7 | 50.0 | 80.0 | 49.0 |"
    assert lines[3] == "| b/run | 2 | 1.9000 | 36.7 | 37.5 | 67.5 | 36.5 |"
    assert (tmp_path / "table.md").read_text() == table
    with Image.open(tmp_path / "curves.png") as image:
        assert image.format == "PNG"
        assert np.asarray(image.convert("L")).std() > 10


def test_report_names_a_bad_line_and_a_missing_run(tmp_path, capsys):
    write_run(tmp_path / "run", [1.0], [])
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write("{not json\n")
    code, _, err = run_report([tmp_path / "run"], capsys)
    assert code == 2 and "metrics.jsonl, line 2: not JSON" in err
    code, _, err = run_report([tmp_path / "nothing"], capsys)
    assert code == 2 and "nothing/metrics.jsonl not found" in err
    assert not (tmp_path / "run" / "report.png").exists()  # nothing half-written
