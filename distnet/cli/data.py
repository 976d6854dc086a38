"""Prepare, inspect and verify CIFAR-10 as Arrow shards (`distnet data prepare|info|verify`)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "data", help="prepare, inspect and verify the CIFAR-10 shards", description=__doc__
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    prepare = actions.add_parser(
        "prepare",
        help="convert the CIFAR-10 tarball to Arrow shards",
        description="Download (or read) cifar-10-python.tar.gz, verify its MD5, and write "
        "train/val/test Arrow shards plus manifest.json. Re-running on a complete "
        "output is a fast no-op.",
    )
    prepare.add_argument(
        "--source",
        metavar="PATH_OR_URL",
        help="local tarball or http(s) URL (default: download the official one)",
    )
    prepare.add_argument(
        "--out",
        metavar="DIR_OR_URI",
        help="output directory or pyarrow URI such as s3://bucket/cifar10 "
        "(default: $DISTNET_CACHE/cifar10, ~/.cache/distnet/cifar10)",
    )
    prepare.add_argument(
        "--shards", type=int, default=8, metavar="N", help="shards per split (default: 8)"
    )
    checksum = prepare.add_mutually_exclusive_group()
    checksum.add_argument(
        "--md5", metavar="HEX", help="expected MD5 of the tarball (default: the official one)"
    )
    checksum.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="accept the tarball whatever its MD5",
    )
    prepare.add_argument(
        "--num-val",
        type=int,
        default=1000,
        metavar="N",
        help="last N training images form the val split (default: 1000)",
    )
    prepare.set_defaults(run=run_prepare)

    for name, run, text in (
        ("info", run_info, "print what a prepared dataset holds"),
        ("verify", run_verify, "re-check every shard's SHA-256, schema and row count"),
    ):
        action = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        action.add_argument("dir", metavar="DIR", help="prepared dataset (directory or URI)")
        action.set_defaults(run=run)


def run_prepare(args: argparse.Namespace) -> int:
    from distnet.data.prepare import default_out, prepare_dataset

    out = args.out or default_out()
    manifest = prepare_dataset(
        out,
        source=args.source,
        shards=args.shards,
        md5=args.md5,
        verify=args.verify,
        num_val=args.num_val,
    )
    rows = ", ".join(f"{name} {split.rows}" for name, split in manifest.splits.items())
    print(f"{out}: {rows} images, {manifest.shards_per_split} shards per split")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from distnet.data.reader import load_manifest

    manifest = load_manifest(args.dir)
    print(f"dataset      {args.dir}")
    print(f"source md5   {manifest.source_md5}")
    print(
        f"image        {'x'.join(map(str, manifest.image_shape))} uint8, "
        f"columns {', '.join(f'{k}: {v}' for k, v in manifest.columns.items())}"
    )
    print(f"labels       {', '.join(manifest.label_names)}")
    for name, split in manifest.splits.items():
        size = sum(shard.bytes for shard in split.shards) / 2**20
        print(f"{name:<12} {split.rows:>7} images in {len(split.shards)} shards, {size:.1f} MiB")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from distnet.data.reader import verify_dataset

    manifest = verify_dataset(args.dir)
    shards = sum(len(split.shards) for split in manifest.splits.values())
    print(f"{args.dir}: all {shards} shards match the manifest")
    return 0
