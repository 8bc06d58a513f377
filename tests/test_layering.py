from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "msr_ray"


def test_recommender_serving_and_baselines_import_nothing_from_stages():
    files = [PACKAGE / "recommender.py", PACKAGE / "tables.py"]
    files += sorted((PACKAGE / "serving").glob("*.py")) + sorted(
        (PACKAGE / "baselines").glob("*.py")
    )
    offenders = [str(f.relative_to(PACKAGE)) for f in files if "msr_ray.stages" in f.read_text()]
    assert len(files) > 6 and offenders == []
