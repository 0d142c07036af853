import pytest

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
