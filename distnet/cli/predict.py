"""Label images with a trained model: PNG/JPEG files (Pillow, the `images` extra) or .npy
batches, one line per image with its most likely classes and their probabilities.

Pictures are center-cropped and resized to 32x32; a .npy batch holds uint8 pixels
((N, 3072), (N, 3, 32, 32) or (N, 32, 32, 3)) or float rows that are already model inputs
(as distnet.data.load_cifar10() returns them). Pixels are normalized with the training
mean of the job's dataset (or of --data).
"""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="label PNG/JPEG images or a .npy batch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file or directory")
    p.add_argument("files", metavar="FILE", nargs="+", help=".png, .jpg, .jpeg or .npy")
    p.add_argument(
        "--top", type=int, default=3, metavar="K", help="classes shown per image (default: 3)"
    )
    p.add_argument(
        "--data",
        metavar="DIR_OR_URI",
        help="the dataset the model was trained on (default: the job's data.path)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per image with every class's probability",
    )
    p.set_defaults(run=run)


def run(args) -> int:
    from distnet.errors import DistnetError
    from distnet.images import read_inputs
    from distnet.inference import predict

    if args.top < 1:
        raise DistnetError(f"--top must be >= 1, got {args.top}")
    pred = predict(args.checkpoint, read_inputs(args.files), data=args.data)
    width = max(len(name) for name in pred.names)
    for name, probs in zip(pred.names, pred.probabilities, strict=True):
        if args.json:
            print(
                json.dumps(
                    {
                        "file": name,
                        "label": pred.label_names[int(probs.argmax())],
                        "probabilities": dict(zip(pred.label_names, probs.tolist(), strict=True)),
                    }
                )
            )
            continue
        best = probs.argsort()[::-1][: args.top]
        print(
            f"{name:<{width}}  " + "  ".join(f"{pred.label_names[i]} {probs[i]:.3f}" for i in best)
        )
    return 0
