"""DistZO2 under torchrun, on GPUs or across nodes (the notebooks' worker, paper54.dist.worker).

    torchrun --nproc-per-node=2 papers/54-distzo2/launch.py --strategy pertp
    torchrun --nnodes=2 --nproc-per-node=2 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \
        papers/54-distzo2/launch.py --strategy 2d
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `shared`
    from shared.paper import import_paper

    import_paper("54")
    from paper54 import dist

    dist.main()
