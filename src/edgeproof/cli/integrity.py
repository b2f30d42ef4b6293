"""``seal``, ``verify``, ``prove``, ``verify-proof``, ``keygen``: integrity seals on the CLI.

Exit codes: 0 ok; 1 a mismatch / invalid proof / invalid signature; 2 bad input (raised as
:class:`~edgeproof.errors.UserError`, printed as one line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeproof.cli import options
from edgeproof.cli.app import formatter

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the integrity commands (in this order in the help)."""
    _register_seal(sub)
    _register_verify(sub)
    _register_prove(sub)
    _register_verify_proof(sub)
    _register_keygen(sub)


def _register_seal(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``seal PATH...``: commit models, datasets and files to a Merkle seal."""
    p = sub.add_parser(
        "seal",
        help="commit models, datasets and files to a Merkle seal",
        formatter_class=formatter,
        description="Seal model tensors (.safetensors, .onnx), dataset records (folders, .npz, "
        ".csv, IDX, builtin:*) and any other file (raw bytes) in one RFC 6962 Merkle seal.",
        epilog="example:\n  edgeproof seal model.safetensors model.json data/val.npz "
        "--out release.seal.json --key release.key",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files, folders or builtin:<name>")
    options.add_output(p, default=None, help="seal file to write (JSON)")
    p.add_argument("--key", type=Path, help="Ed25519 private key (PEM) to sign the seal")
    p.add_argument(
        "--chunk-size",
        type=options.at_least(1),
        default=None,
        help="bytes per tensor/file chunk, a multiple of 4 in [4096, 262144] (default 65536)",
    )
    p.add_argument("--raw", action="store_true", help="seal every path as raw file bytes")
    p.add_argument("--x-key", default="x", help="npz input array name (default x)")
    p.add_argument("--y-key", default="y", help="npz label array name (default y)")
    p.add_argument("--label-column", default="label", help="csv label column (default label)")
    p.add_argument(
        "--allow-outside",
        action="store_true",
        help="allow sealing paths outside the seal's folder (stored as ../ paths)",
    )
    options.add_threads(p, default="all cores")
    options.add_json(p, what="the seal (the file written to --out)")
    p.set_defaults(handler=_seal)


def _register_verify(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``verify SEAL``: check the sealed paths against a seal."""
    p = sub.add_parser(
        "verify",
        help="check sealed paths against a seal; name every change",
        formatter_class=formatter,
        description="Recompute every sealed item and report each changed record (content or "
        "label), tensor region (element, bit) and file range. Never writes. Exit 1 on any "
        "mismatch or an invalid signature.",
        epilog="example:\n  edgeproof verify release.seal.json --pub release.key.pub",
    )
    p.add_argument("seal", type=Path, metavar="SEAL")
    p.add_argument("--pub", type=Path, help="require a valid signature by this public key")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument(
        "--allow-outside",
        action="store_true",
        help="follow sealed paths that leave the seal's folder (only for seals you trust)",
    )
    options.add_threads(p, default="all cores")
    p.set_defaults(handler=_verify)


def _register_prove(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``prove SEAL RECORD_ID``: write an inclusion proof."""
    p = sub.add_parser(
        "prove",
        help="write an inclusion proof for one record or tensor chunk",
        formatter_class=formatter,
        description="Build a self-contained RFC 6962 inclusion proof from the seal alone.",
        epilog="example:\n  edgeproof prove release.seal.json 'val.npz#17' --out rec17.proof.json"
        "\n  edgeproof prove release.seal.json 'fc.weight#0'",
    )
    p.add_argument("seal", type=Path, metavar="SEAL")
    p.add_argument("record_id", metavar="RECORD_ID", help="record id, or <tensor>#<chunk>")
    p.add_argument("--item", help="sealed path to look in (default: all)")
    p.add_argument("--out", type=Path, help="proof file to write (default: stdout)")
    p.set_defaults(handler=_prove)


def _register_verify_proof(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``verify-proof PROOF``: check an inclusion proof on its own."""
    p = sub.add_parser(
        "verify-proof",
        help="check an inclusion proof on its own",
        formatter_class=formatter,
        description="Check a proof written by `edgeproof prove` with nothing but the proof "
        "(and optionally the publisher's public key). Exit 1 if it does not hold.",
        epilog="example:\n  edgeproof verify-proof rec17.proof.json --pub release.key.pub",
    )
    p.add_argument("proof", type=Path, metavar="PROOF")
    p.add_argument("--pub", type=Path, help="require the seal to be signed by this key")
    p.set_defaults(handler=_verify_proof)


def _register_keygen(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``keygen --out KEY``: create an Ed25519 key pair."""
    p = sub.add_parser(
        "keygen",
        help="create an Ed25519 key pair for signing seals",
        formatter_class=formatter,
        description="Write a private key (PEM, mode 0600) to KEY and its public key to KEY.pub.",
        epilog="example:\n  edgeproof keygen --out release.key",
    )
    options.add_output(p, default=None, help="private key file to write", metavar="KEY")
    p.add_argument("--force", action="store_true", help="overwrite an existing key")
    p.set_defaults(handler=_keygen)


def _seal(args: argparse.Namespace) -> int:
    from edgeproof.errors import OptionError
    from edgeproof.integrity.chunks import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
    from edgeproof.integrity.sealing import seal_paths

    cs = DEFAULT_CHUNK_SIZE if args.chunk_size is None else args.chunk_size
    if cs % 4 or not MIN_CHUNK_SIZE <= cs <= MAX_CHUNK_SIZE:
        raise OptionError(
            "chunk_size",
            f"{cs} is not a multiple of 4 in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]",
            "use e.g. 65536",
        )
    out = Path(args.out)
    options.check_outputs([out], [*args.paths, args.key])
    key = None
    if args.key:  # the signing code (cryptography) is imported only when it is used
        from edgeproof.integrity.signing import load_private_key

        key = load_private_key(args.key)
    loader = {"x_key": args.x_key, "y_key": args.y_key, "label_column": args.label_column}
    seal = seal_paths(
        args.paths,
        base_dir=out.parent,
        chunk_size=cs,
        raw=args.raw,
        loader=loader,
        threads=args.threads,
        key=key,
        allow_outside=args.allow_outside,
    )
    seal.write(out)
    log = sys.stderr if args.json else sys.stdout
    for h in seal.headers:
        print(
            f"sealed {h.kind:<7} {h.path} ({h.format}, {h.leaves} leaves) root {h.root.hex()}",
            file=log,
        )
    signed = f", signed by {seal.signature.fingerprint}" if seal.signature else ", unsigned"
    print(f"seal root {seal.root.hex()}{signed} -> {out}", file=log)
    if args.json:
        options.emit_file(out)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from edgeproof.integrity.sealfile import Seal
    from edgeproof.integrity.verify import verify_seal

    seal = Seal.read(args.seal)
    pub = None
    if args.pub:
        from edgeproof.integrity.signing import load_public_key

        pub = load_public_key(args.pub)
    result = verify_seal(
        seal,
        base_dir=args.seal.parent,
        public_key=pub,
        threads=args.threads,
        source=str(args.seal),
        allow_outside=args.allow_outside,
    )
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=1)
        print()
    else:
        print(result.signature.message())
        for it in result.items:
            print(f"{'ok      ' if it.ok else 'CHANGED '} {it.kind:<7} {it.path}")
        for line in result.messages():
            print(f"  {line}")
        print("verified: everything matches the seal" if result.ok else "verification FAILED")
    return 0 if result.ok else 1


def _prove(args: argparse.Namespace) -> int:
    from edgeproof.integrity.proof import prove
    from edgeproof.integrity.sealfile import Seal

    if args.out is not None:
        options.check_outputs([args.out], [args.seal])
    proof = prove(Seal.read(args.seal), args.record_id, item=args.item)
    if args.out is None:
        json.dump(proof.to_json(), sys.stdout, indent=1)
        print()
    else:
        proof.write(args.out)
        print(
            f"wrote inclusion proof for {args.record_id!r} "
            f"(leaf {proof.leaf_index} of {proof.tree_size}) -> {args.out}"
        )
    return 0


def _verify_proof(args: argparse.Namespace) -> int:
    from edgeproof.integrity.proof import InclusionProof, verify_proof
    from edgeproof.integrity.signing import load_public_key

    proof = InclusionProof.read(args.proof)
    pub = load_public_key(args.pub) if args.pub else None
    check = verify_proof(proof, pub)
    sig = {
        "unsigned": "seal unsigned",
        "valid": f"signed by {check.fingerprint}",
        "invalid": "signature INVALID",
    }[check.signature]
    print(f"{'valid' if check.ok else 'INVALID'}: {check.reason} ({sig})")
    return 0 if check.ok else 1


def _keygen(args: argparse.Namespace) -> int:
    from edgeproof.integrity.signing import generate_key

    out = Path(args.out)
    if not args.force:
        options.check_outputs([out, out.with_name(out.name + ".pub")], [])
    priv, pub = generate_key(out, overwrite=args.force)
    print(f"wrote private key {priv} (keep it secret) and public key {pub}")
    return 0
