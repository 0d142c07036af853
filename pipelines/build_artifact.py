"""Build one shared artifact for the pipeline: ``python -m pipelines.build_artifact tinylm``.

Reads the composed params.yaml, checks that the artifacts it requires are current, and
builds into ``build/artifacts/<name>/`` (see ``shared/artifacts.py``). A failed or
interrupted build leaves its staging folder for the next attempt to resume, and the
previous ``build/artifacts/<name>/`` untouched; the failure is one line.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from shared import artifacts, config
from shared.paths import PARAMS_FILE, ROOT


def build_artifact(name: str, params_file: Path = PARAMS_FILE) -> Path:
    tree = config.load(params_file)
    config.validate(tree)
    inputs = {req: artifacts.ARTIFACTS_DIR / req for req in artifacts.requires(name)}
    started = time.perf_counter()
    dest = artifacts.build(name, tree, artifacts.ARTIFACTS_DIR / name, inputs)
    print(f"[{name}] built {dest.relative_to(ROOT)} in {time.perf_counter() - started:.1f} s", flush=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help=f"artifact name: {', '.join(artifacts.MODULES)}")
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="composed params file")
    args = parser.parse_args(argv)
    try:
        build_artifact(args.name, args.params)
    except (OSError, config.ParamError, artifacts.ArtifactError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
