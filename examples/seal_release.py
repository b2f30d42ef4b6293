"""Seal a release (model + data) with a signed Merkle seal, verify it, and localise a tamper.

python examples/seal_release.py --out runs/release
"""

from __future__ import annotations

import shutil
import sys

from _common import parser, trained_model

from edgeproof.integrity import (
    Seal,
    generate_key,
    load_private_key,
    load_public_key,
    seal_paths,
    verify_seal,
)


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    model = trained_model(args.model)
    assert model.path is not None
    release = args.out / "release"
    release.mkdir(parents=True, exist_ok=True)
    # the release: the weights and their sidecar (architecture, input spec)
    for src in (model.path, model.path.with_suffix(".json")):
        shutil.copy(src, release / f"model{src.suffix}")

    key, pub = generate_key(args.out / "release.key", overwrite=True)
    seal = seal_paths(
        [release / "model.safetensors", release / "model.json", "builtin:digits"],
        base_dir=release,
        key=load_private_key(key),
    )
    seal_file = seal.write(release / "release.seal.json", base_dir=release)
    print(f"sealed {len(seal.items)} items, root {seal.root.hex()[:16]}…, signed")

    result = verify_seal(Seal.read(seal_file), base_dir=release, public_key=load_public_key(pub))
    print("verify:", "ok" if result.ok else "FAILED")
    if not result.ok:
        return 1

    # flip one bit of the weights: verify names the tensor, the element and the bit
    weights = release / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-3] ^= 0x01
    weights.write_bytes(bytes(blob))
    tampered = verify_seal(Seal.read(seal_file), base_dir=release, public_key=load_public_key(pub))
    print("after the tamper:", "ok" if tampered.ok else "FAILED")
    for message in tampered.messages():
        print(" ", message)
    return 0 if not tampered.ok else 1


if __name__ == "__main__":
    sys.exit(main())
