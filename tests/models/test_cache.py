import multiprocessing
import time
from pathlib import Path

from msr_ray.models.cache import build_once


def _slow_build(out: Path) -> None:
    time.sleep(0.5)
    (out / "weights.bin").write_text("done")
    with open(out.parent / "builds.log", "a") as log:
        log.write("built\n")


def _worker(cache_dir: str) -> str:
    return str(build_once("model", _slow_build, cache_dir))


def test_concurrent_builders_build_once(tmp_path):
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        folders = pool.map(_worker, [str(tmp_path)] * 3)
    assert len(set(folders)) == 1
    assert (Path(folders[0]) / "weights.bin").read_text() == "done"
    assert (tmp_path / "builds.log").read_text() == "built\n"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_failed_build_leaves_nothing(tmp_path):
    def broken(out: Path) -> None:
        (out / "half").write_text("x")
        raise RuntimeError("boom")

    try:
        build_once("model", broken, str(tmp_path))
    except RuntimeError:
        pass
    assert not (tmp_path / "model").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_a_first_build_prints_nothing_to_stdout(tmp_path, capsys):
    def chatty(out: Path) -> None:
        print("Setting accelerator to CPU.")
        (out / "weights.bin").write_text("done")

    folder = build_once("model", chatty, str(tmp_path))
    printed = capsys.readouterr()
    assert (folder / "weights.bin").read_text() == "done"
    assert printed.out == "" and "Setting accelerator to CPU." in printed.err
