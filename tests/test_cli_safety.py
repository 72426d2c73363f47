"""What a careless or hostile user can do to the CLI: every case ends in one line and exit 2 (or a quiet,
correct result), and no finished result is lost. One test per item of the "never lose a result" issue."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from typer.testing import CliRunner

from attnbench import api, bench
from attnbench.commands import common
from attnbench.cli import app
from attnbench.store import files, jsonl

runner = CliRunner()
TINY = ["-m", "se", "--C", "16", "--T", "2", "--H", "4", "--W", "4", "--reps", "2", "--target-s", "0.01",
        "--warmup-s", "0", "--no-roofline"]


def run(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output, result.output
    return lines[0]


def attnbench(*args: str, **kw):
    """The installed program in a fresh process (for what only a real process shows: pipes, closed streams)."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "attnbench", *args], timeout=120, **kw)


def side_by_side(*runs: Callable[[], subprocess.CompletedProcess]) -> list[subprocess.CompletedProcess]:
    """Independent programs run two at a time (each spends seconds importing torch, mostly on one core);
    their results in the order given."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda f: f(), runs))


# -- 1. two outputs that are one file -------------------------------------------------------------------


def test_an_output_equal_to_the_results_file_is_refused_and_the_rows_kept(tmp_path) -> None:
    rows = tmp_path / "same.jsonl"
    assert run("sweep", "-m", "nl,cs", "--T", "4,8", "--out", str(rows)).exit_code == 0
    before = rows.read_bytes()
    line = one_line_error(run("sweep", "-m", "nl,cs", "--T", "4,8", "--resume", "--out", str(rows), "--csv", str(rows)))
    assert "--out and --csv name the same file" in line and rows.read_bytes() == before
    line = one_line_error(run("speed", *TINY, "--out", str(tmp_path / "sp.jsonl"), "--md", str(tmp_path / "sp.jsonl")))
    assert "--out and --md" in line and not (tmp_path / "sp.jsonl").exists()
    assert "same file" in one_line_error(run("flops", "-m", "cs", "--csv", str(tmp_path / "t"), "--md", str(tmp_path / "t")))


# -- 2. devices and links are written through -------------------------------------------------------------


def test_a_symlinked_output_writes_its_target(tmp_path) -> None:
    real = tmp_path / "real.csv"
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert run("flops", "-m", "cs", "--csv", str(link), "--md", "/dev/null").exit_code == 0
    assert link.is_symlink() and real.read_text().startswith("module,") and os.path.exists("/dev/null")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# -- 3. resume never reuses rows measured elsewhere or otherwise ------------------------------------------


def test_resume_refuses_rows_of_another_device_and_keys_name_the_settings(tmp_path) -> None:
    out = tmp_path / "speed.jsonl"
    assert run("speed", *TINY, "--out", str(out)).exit_code == 0
    row = json.loads(out.read_text().splitlines()[0])
    case = api.resolve("se", None, {"C": 16, "T": 2, "H": 4, "W": 4})
    base = dict(device="cpu", min_reps=2, target_s=0.01, max_warmup_s=0)
    for change, part in (({"min_reps": 3}, ":reps=3:"), ({"target_s": 0.02}, ":target_s=0.02:"),
                         ({"threads": 1}, ":threads=1:"), ({"precision": "autocast", "dtype": "bf16"}, "autocast")):
        key = bench.block_target(case).key(bench.Settings(**{**base, **change}), row["fingerprint"])
        assert part in key and key != row["key"]
    assert bench.block_target(case).key(bench.Settings(**base), row["fingerprint"]) == row["key"]
    other = api.resolve("se", None, {"C": 16, "T": 2, "H": 4, "W": 4}, {"r": 4})
    assert bench.block_target(other).key(bench.Settings(**base), row["fingerprint"]) != row["key"]
    row["fingerprint"] = {**row["fingerprint"], "device_type": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3"}
    out.write_text(json.dumps(row) + "\n")
    line = one_line_error(run("speed", *TINY, "--out", str(out), "--resume"))
    assert "cannot be reused: it was measured on another device" in line and "gpu_name: NVIDIA H100" in line


# -- 4. two runs on one file ----------------------------------------------------------------------------


def test_a_second_run_on_a_locked_results_file_exits_2(tmp_path) -> None:
    out = tmp_path / "sweep.jsonl"
    with files.locked(out):
        line = one_line_error(run("sweep", "-m", "cs", "--T", "4", "--out", str(out)))
    assert "is in use by another attnbench run" in line and not out.exists()


# -- 5. re-running without --resume -----------------------------------------------------------------------


def test_rerunning_a_sweep_needs_resume_or_overwrite(tmp_path) -> None:
    out = tmp_path / "sweep.jsonl"
    assert run("sweep", "-m", "nl,cs", "--T", "4,8", "--out", str(out)).exit_code == 0
    first = out.read_text().splitlines()
    assert "already holds 4 of the 4 rows of this run; pass --resume" in one_line_error(
        run("sweep", "-m", "nl,cs", "--T", "4,8", "--out", str(out)))
    assert out.read_text().splitlines() == first
    result = run("sweep", "-m", "nl,cs", "--T", "4,8", "--out", str(out), "--overwrite")
    assert result.exit_code == 0 and "(4 new, 0 from the file)" in result.output and len(out.read_text().splitlines()) == 4
    result = run("sweep", "-m", "nl,cs", "--T", "4,8,16", "--out", str(out), "--resume")
    assert "(2 new, 4 from the file)" in result.output and len(out.read_text().splitlines()) == 6


# -- 6. sizes past torch's limits -------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [["--T", "100000", "--H", "4096", "--W", "4096"], ["--T", "99999999999999999999"]])
def test_huge_sizes_are_counted_by_the_closed_forms(sizes) -> None:
    result = run("flops", "-m", "nl", *sizes, "--json")
    assert result.exit_code == 0, result.output
    rec = json.loads(result.stdout)
    assert rec["counted"]["exact"]["flops"] is None and "64-bit" in rec["counted"]["exact"]["skipped"]
    T, H = int(sizes[1]), int(sizes[3]) if len(sizes) > 2 else 28
    thw = T * H * H
    assert rec["analytic"]["affinity_flops"] == 2 * 48 * thw * thw  # B x C_in (THW)^2 x 2, exact Python integers
    result = run("flops", "-m", "cs", *sizes)
    assert result.exit_code == 0 and "note: cs: the exact counter cannot run" in result.output
    result = run("speed", "-m", "cs", *sizes, "--no-save", "--no-roofline", "--json")
    status = json.loads(result.stdout)["status"] if result.exit_code == 0 else result.output
    # past the memory guard: an out-of-memory row; past 64-bit sizes: an error row naming the overflow
    assert status == "OOM" or (status.startswith("error:") and "Overflow" in status), status


# -- 7. results files with lines that are not rows --------------------------------------------------------


def test_resume_skips_bad_lines_with_a_warning(tmp_path) -> None:
    out = tmp_path / "sweep.jsonl"
    assert run("sweep", "-m", "cs", "--T", "4,8", "--out", str(out)).exit_code == 0
    with open(out, "ab") as fh:
        fh.write(b'5\nnull\n[1]\n\xff\xfe\n{"module": "cs"}\n{"key": "x"')
    result = run("sweep", "-m", "cs", "--T", "4,8,16", "--out", str(out), "--resume")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "skipped 6 line(s)" in result.output and "(1 new, 2 from the file)" in result.output
    out = tmp_path / "speed.jsonl"
    out.write_bytes(b'7\n{"name": "se"}\n')
    result = run("speed", *TINY, "--out", str(out), "--resume")
    assert result.exit_code == 0 and "skipped 2 line(s)" in result.output


def test_reproduce_and_report_survive_malformed_files(tmp_path, monkeypatch) -> None:
    from attnbench.papers import measured
    from attnbench.report import job

    folder = tmp_path / "results" / "cpu-x"
    folder.mkdir(parents=True)
    good = {"kind": "network", "network": "eco", "preset": "16f", "attn": "cs", "status": "ok"}
    (folder / "table-vi.jsonl").write_bytes(b"[]\n\xff\n" + json.dumps({**good, "vps": "fast"}).encode() + b"\n"
                                            + json.dumps({**good, "vps": 2.0, "settings": 5}).encode() + b"\n")
    (folder / "speed.jsonl").mkdir()  # a folder named like a results file
    with pytest.warns(Warning):
        assert measured.runs(tmp_path / "results") == []
    out = tmp_path / "rep"
    out.mkdir()
    opts = job.ReportOptions(mode="quick", device=None, resume=True)
    ctx = job.make_context(opts, out)
    for name in ("list",):
        for f in job.expected_files(name):
            ctx.path(f).write_text("x")
    ctx.path("list.json").write_text('["not", "a", "section"]')
    with pytest.warns(Warning, match="not a section file"):
        assert job._kept(ctx, "list") is None
    ctx.path("list.json").write_bytes(b"\xff\xfe")
    with pytest.warns(Warning):
        assert job._kept(ctx, "list") is None


# -- 9. pipes, full disks, closed streams, Ctrl-C -----------------------------------------------------------


def test_broken_pipe_full_disk_and_closed_streams() -> None:
    with open("/dev/full", "w") as full_out, open("/dev/full", "w") as full_err:
        piped, out_full, out_closed, err_closed, err_full = side_by_side(
            lambda: subprocess.run(f"{sys.executable} -m attnbench flops --all --json --counters exact | head -1",
                                   shell=True, capture_output=True, timeout=180),
            lambda: attnbench("list", stdout=full_out, stderr=subprocess.PIPE),
            lambda: subprocess.run(f"{sys.executable} -m attnbench list >&-", shell=True, capture_output=False,
                                   stderr=subprocess.PIPE, timeout=120),
            lambda: subprocess.run(f"{sys.executable} -m attnbench flops -m nope 2>&-", shell=True, capture_output=True,
                                   timeout=120),
            lambda: attnbench("flops", "-m", "nope", stdout=subprocess.PIPE, stderr=full_err))
    assert piped.stdout.count(b"\n") == 1 and piped.stderr == b""
    assert out_full.returncode == 2
    assert out_full.stderr.decode().strip() == "error: cannot write standard output: No space left on device"
    assert out_closed.returncode == 2 and b"standard output is closed" in out_closed.stderr
    assert b"Traceback" not in out_closed.stderr
    assert err_closed.returncode == 2
    assert err_full.returncode == 2


def test_ctrl_c_while_torch_is_imported_is_one_line() -> None:
    # `flops --all` imports torch (about a second) and then counts for seconds: the signal lands in one or
    # the other, and either way the answer is one line and exit 130
    proc = subprocess.Popen([sys.executable, "-m", "attnbench", "flops", "--all", "--counters", "exact"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.25)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    # 130, or death by SIGINT (which a shell also reports as 130) when the signal lands while torch's C
    # code runs and Python re-delivers it at exit
    assert proc.returncode in (130, -signal.SIGINT) and stderr.decode().strip() == "interrupted", stderr


# -- 10. report --out -------------------------------------------------------------------------------------


def test_report_out_must_be_a_folder_it_may_write(tmp_path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert "it is not a folder" in one_line_error(run("report", "--quick", "--out", str(afile)))
    assert "empty" in one_line_error(run("report", "--quick", "--out", ""))
    (tmp_path / "README.md").write_text("# my project\n")
    assert "not an attnbench report index" in one_line_error(run("report", "--quick", "--out", str(tmp_path)))
    assert (tmp_path / "README.md").read_text() == "# my project\n" and afile.read_text() == "mine"


# -- 11. nonsense numbers and contradicting flags --------------------------------------------------------


@pytest.mark.parametrize("args,needle", [
    (["sweep", "--max-gflops", "nan"], "--max-gflops must be above 0"),
    (["sweep", "--factor", "nan"], "--factor must be above 1"),
    (["sweep", "--factor", "inf"], "--factor must be above 1"),
    (["speed", *TINY, "--target-s", "inf"], "--target-s must be above 0 and at most 600"),
    (["speed", *TINY, "--warmup-s", "-1"], "--warmup-s must be at least 0"),
    (["speed", *TINY, "--no-save", "--out", "x.jsonl"], "--no-save writes no results file"),
    (["speed", *TINY, "--no-save", "--resume"], "--no-save writes no results file"),
    (["sweep", "--no-save", "--out", "x.jsonl"], "--no-save writes no results file"),
    (["flops", "-m", "w3", "-o", "stages=99"], "option stages must be <= 5"),
    (["table-vi", "--target-s", "nan"], "--target-s must be above 0"),
])
def test_nonsense_is_refused(args, needle) -> None:
    assert needle in one_line_error(run(*args))


# -- 12. messages ------------------------------------------------------------------------------------------


def test_messages_name_the_flag_and_stay_on_one_line(tmp_path, monkeypatch) -> None:
    line = one_line_error(run("speed", *TINY, "--reps", "2000"))
    assert "--reps must be at least 1 and at most 1000" in line and "min_reps" not in line
    assert "1 to 1000" in " ".join(run("speed", "--help").output.replace("│", " ").split())  # help wraps in its box
    line = one_line_error(run("flops", "-m", "cs", "--csv", str(tmp_path / "a\nb"), "--md", str(tmp_path / "a\nb")))
    assert "a\\nb" in line

    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "0")
    assert common._width(Tty()) == 80
    monkeypatch.setenv("COLUMNS", "120")
    assert common._width(Tty()) is None and common._width(None) == 200


# -- 16. load and threads in every row -----------------------------------------------------------------


def test_speed_rows_record_threads_and_load_and_warn_when_loaded(tmp_path, monkeypatch) -> None:
    from attnbench.measuring import device as dev

    out = tmp_path / "speed.jsonl"
    monkeypatch.setattr(dev, "load_average", lambda: 99.0)
    result = run("speed", *TINY, "--threads", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "warning: the machine is loaded: 1-minute load average 99.0" in result.output
    row = next(jsonl.read_rows(out))
    assert row["threads"] == 1 and row["load_avg_1m"] == 99.0 and row["fingerprint"]["load_avg_1m"] == 99.0
    assert ":threads=1:" in row["key"]


# -- 13. what files hold is printed as data -----------------------------------------------------------------


def test_rows_from_a_results_file_print_inert(tmp_path) -> None:
    import pandas as pd
    from rich.console import Console

    from attnbench.report import tables

    out = tmp_path / "speed.jsonl"
    assert run("speed", *TINY, "--out", str(out)).exit_code == 0
    row = json.loads(out.read_text())
    row["module"], row["preset"] = "[bold red]pwn[/]", "\x1b[2JFAKE PASS"
    out.write_text(json.dumps(row) + "\n")
    result = run("speed", *TINY, "--out", str(out), "--resume")
    assert result.exit_code == 0 and "\x1b" not in result.output
    console = Console(record=True, width=300, force_terminal=True)
    console.print(tables.to_rich(pd.DataFrame([{"block": "[bold red]pwn[/]", "[x]": "\x1b[2J [/oops]"}]), "t"))
    text = console.export_text()
    assert "[bold red]pwn[/]" in text and "[x]" in text and "\\x1b[2J [/oops]" in text


# -- second pass: what a hostile review found ----------------------------------------------------------------


def test_standard_output_as_a_file_name_is_written_through(tmp_path) -> None:
    log = tmp_path / "log.txt"
    log.write_text("important log\nline 2\n")
    appended, piped = side_by_side(
        lambda: subprocess.run(f"{sys.executable} -m attnbench flops -m cs --counters exact --md /dev/stdout >> {log}",
                               shell=True, capture_output=True, timeout=120),
        lambda: subprocess.run(f"{sys.executable} -m attnbench sweep -m nl --T 4 --out /dev/stdout | cat", shell=True,
                               capture_output=True, timeout=120, cwd=tmp_path))
    assert appended.returncode == 0, appended.stderr
    text = log.read_text()
    assert text.startswith("important log\nline 2\n") and "| module" in text and "FLOPs and parameters" in text
    assert piped.returncode == 0 and piped.stdout.count(b'"kind": "sweep"') == 1, piped.stderr
    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    result = run("sweep", "-m", "nl", "--T", "4", "--out", str(fifo))
    assert result.exit_code == 0 and b'"kind": "sweep"' in reader.communicate(timeout=60)[0]


def test_overwrite_removes_an_old_row_only_once_it_is_replaced(tmp_path) -> None:
    path = tmp_path / "rows.jsonl"
    old = [json.dumps({"key": k, "v": "old"}).encode() for k in ("a", "b")]
    path.write_bytes(old[0] + b"\n" + b"x\ry\n" + old[1] + b"\n")
    with pytest.raises(KeyboardInterrupt):
        with jsonl.session(path, ["a", "b"], overwrite=True):
            jsonl.append_row(path, {"key": "a", "v": "new"})
            raise KeyboardInterrupt  # Ctrl-C before b is measured again
    assert path.read_bytes() == b"x\ry\n" + old[1] + b"\n" + json.dumps({"key": "a", "v": "new"}).encode() + b"\n"


def test_one_command_is_one_session(tmp_path) -> None:
    out = tmp_path / "s.jsonl"
    assert run("speed", *TINY, "--batch", "2", "--out", str(out)).exit_code == 0
    before = out.read_text()
    assert "already holds 1 of the 2 rows" in one_line_error(run("speed", *TINY, "--batch", "1", "--batch", "2", "--out", str(out)))
    assert out.read_text() == before  # nothing measured, nothing appended
    twice = tmp_path / "twice.jsonl"
    result = run("speed", *TINY, "-m", "se", "--batch", "1", "--batch", "1", "--out", str(twice), "--json")
    assert result.exit_code == 0 and len(twice.read_text().splitlines()) == 1 and len(result.stdout.splitlines()) == 1


def test_rich_output_into_a_closed_pipe_exits_0() -> None:
    cmds = ("flops -m cs --counters exact", "--help", "sweep -m nl --T 4 --no-save")

    def into_head(cmd: str) -> Callable[[], subprocess.CompletedProcess]:
        return lambda: subprocess.run(f"{sys.executable} -m attnbench {cmd} | head -1; exit ${{PIPESTATUS[0]}}",
                                      shell=True, executable="/bin/bash", capture_output=True, timeout=120)

    for cmd, proc in zip(cmds, side_by_side(*map(into_head, cmds))):
        assert proc.returncode == 0 and proc.stderr == b"", (cmd, proc.returncode, proc.stderr)


def test_paths_are_printed_as_given(tmp_path) -> None:
    out = tmp_path / "z[/bold].jsonl"
    result = run("speed", *TINY, "--out", str(out))
    assert result.exit_code == 0 and f"rows appended to {out}" in result.output.replace("\n", "")
    assert "empty" in one_line_error(run("speed", *TINY, "--out", ""))
    assert "empty" in one_line_error(run("sweep", "-m", "cs", "--T", "4", "--out", ""))


def test_report_refuses_a_folder_of_other_files(tmp_path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "flops.csv").write_text("data")
    assert "not empty and not an attnbench report folder (it holds flops.csv)" in one_line_error(
        run("report", "--quick", "--out", str(mine)))
    assert (mine / "flops.csv").read_text() == "data"
    assert "not a folder" in one_line_error(run("report", "--quick", "--out", "/dev/null"))


def test_resume_measures_again_rows_with_fields_of_the_wrong_type(tmp_path) -> None:
    out = tmp_path / "speed.jsonl"
    assert run("speed", *TINY, "--out", str(out)).exit_code == 0
    row = json.loads(out.read_text())
    del row["status"]
    out.write_text(json.dumps(row) + "\n")
    result = run("speed", *TINY, "--out", str(out), "--resume")
    assert result.exit_code == 0 and "1 row(s) of this run cannot be reused and are measured again (row" in result.output
    sweep = tmp_path / "sweep.jsonl"
    assert run("sweep", "-m", "cs", "--T", "4", "--out", str(sweep)).exit_code == 0
    row = json.loads(sweep.read_text())
    row["flops"] = "abc"
    sweep.write_text(json.dumps(row) + "\n")
    result = run("sweep", "-m", "cs", "--T", "4", "--out", str(sweep), "--resume")
    assert result.exit_code == 0 and "flops:" in result.output and "(1 new, 0 from the file)" in result.output


def test_reproduce_skips_odd_results_files(tmp_path) -> None:
    from attnbench.papers import measured

    results = tmp_path / "results"
    (results / "a").mkdir(parents=True)
    (results / "b" / "table-vi.jsonl").mkdir(parents=True)
    good = {"key": "k", "kind": "network", "network": "eco", "preset": "16f", "attn": "cs", "status": "ok", "vps": 2.0}
    (results / "a" / "table-vi.jsonl").write_text(json.dumps({**good, "settings": {"batch": 1e400}}) + "\n")
    with pytest.warns(Warning) as caught:
        assert measured.runs(results) == []
    text = " ".join(str(w.message) for w in caught)
    assert "is a directory" in text and "wrong type" in text


def test_inputs_are_checked_before_folders_are_made(tmp_path) -> None:
    one_line_error(run("flops", "-m", "bogus", "--csv", str(tmp_path / "new" / "sub" / "x.csv")))
    assert not (tmp_path / "new").exists()
    (tmp_path / "plain").write_text("")
    assert "plain is not a folder" in one_line_error(run("flops", "-m", "cs", "--csv", str(tmp_path / "plain" / "x.csv")))
    assert "--T takes a comma list" in one_line_error(run("sweep", "--T", ""))
    assert "--modules takes a comma list of blocks" in one_line_error(run("sweep", "-m", ""))


def test_networks_past_torch_limits_are_one_line() -> None:
    line = one_line_error(run("flops", "-n", "eco-lite", "--T", "99999999999999999999"))
    assert "past torch's 64-bit tensor sizes" in line
