import ray

from msr_ray.cluster import init_ray, shutdown_ray


def test_local_ray_starts_and_stops():
    was_running = ray.is_initialized()
    resources = init_ray(num_cpus=2)
    assert resources["CPU"] >= 1
    assert ray.get(ray.put(41)) + 1 == 42
    if not was_running:
        shutdown_ray()
        assert not ray.is_initialized()
