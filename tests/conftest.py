import pytest
import yaml

from shared.paper import all_papers, import_paper

# Make every paper's code importable as paperNN in the test session.
for _paper in all_papers():
    import_paper(_paper.number)


def pytest_collection_modifyitems(config, items):
    # CUDA-only tests are skipped, with the reason, on machines without a GPU.
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("gpu") and not has_cuda:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smoke_params(tmp_path_factory):
    """params.yaml composed at smoke scale in a scratch folder, so unit tests do not depend
    on whatever scale the workspace's params.yaml was last composed at."""
    from shared import config

    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(config.compose(["scale=smoke"]), sort_keys=False))
    return path


@pytest.fixture
def one_thread():
    """Tiny models on one torch thread: a second OpenMP thread only adds contention (badly
    so on a shared 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
