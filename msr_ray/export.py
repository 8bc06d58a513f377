"""`msr-ray export`: a run's trained recommender as one portable Hugging Face folder.

Reads what the run trained (``run.method_inputs``) and writes it with
``method.export.export_recommender``: the folder's layout is documented there.
"""

from __future__ import annotations

import shutil
from typing import Any

from msr_ray.method.export import export_recommender, new_folder
from msr_ray.run.method_inputs import adapter_dir, export_sources, trained_config
from msr_ray.run.rundir import RunDir


def export_model(run: RunDir, out: str) -> dict[str, Any]:
    """Write the merged recommender of ``run`` to the local folder ``out``; its settings.

    ``out`` is checked (and made) before the run is read or the model loads: a non-empty
    folder, a link or a path that cannot be made raises ``OSError`` at once, and a failed
    export removes the folder it made.
    """
    made = new_folder(out)
    try:
        return export_recommender(trained_config(run), adapter_dir(run), export_sources(run), out)
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise
