"""CompressAI's bmshj2018 models trained and run as the codec comparison's peer, in CompressAI's own environment.

    .venv-compressai/bin/python experiments/compressai_peer.py DATA.npz OUT.npz --model factorized \
        --channels 32 --latent 32 --lmbdas 0.004,0.016 --epochs 2 --batch-size 32 --lr 1e-3 --schedule constant

CompressAI needs PyTorch and numpy < 2, which aejax's environment does not hold, so
`experiments/codec_compare.py` runs this script with another interpreter and reads its output; it imports no
aejax. DATA.npz holds `train` and `test`, uint8 `[N, H, W, C]`. For each lambda it trains
`compressai.models.FactorizedPrior(N, M)` or `ScaleHyperprior(N, M)` (a 1-channel first and last layer for grey
images) with CompressAI's training recipe (loss lambda * 255^2 * MSE + bpp, Adam on the network with a constant
learning rate, or one decayed to 0 on a cosine over the run as aejax's `cosine` schedule, and a second Adam on
the entropy bottleneck's quantile loss), then `update()`s its coding tables and codes each test image alone
with `compress()` / `decompress()`. Images are zero-padded at the bottom and right to a multiple of 16
(factorized) or 64 (hyperprior), as the models' strides need, and decoded images cropped back. OUT.npz holds,
per lambda, the decoded test images (float32 in [0, 1]), each image's bytes (the sum of its `compress()`
strings), and the training time and images per second.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from compressai.models import FactorizedPrior, ScaleHyperprior
from compressai.models.utils import conv, deconv


def build(kind: str, n: int, m: int, channels: int) -> torch.nn.Module:
    net = FactorizedPrior(n, m) if kind == "factorized" else ScaleHyperprior(n, m)
    if channels != 3:
        net.g_a[0] = conv(channels, n)
        net.g_s[-1] = deconv(n, channels)
    return net


def pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % multiple, 0, -h % multiple))


def train(net: torch.nn.Module, images: np.ndarray, lmbda: float, epochs: int, batch: int, lr: float,
          schedule_name: str, multiple: int, seed: int) -> tuple[float, int]:
    """Train in place; returns (seconds, images seen)."""
    main = [p for name, p in net.named_parameters() if not name.endswith(".quantiles")]
    aux = [p for name, p in net.named_parameters() if name.endswith(".quantiles")]
    optimizer, aux_optimizer = torch.optim.Adam(main, lr), torch.optim.Adam(aux, 1e-3)
    data = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0  # [N, C, H, W]
    generator = torch.Generator().manual_seed(seed)
    h, w = data.shape[-2:]
    steps = len(data) // batch
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps) if schedule_name == "cosine"
                else torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0))
    start = time.perf_counter()
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=generator)
        for s in range(steps):
            x = data[order[s * batch:(s + 1) * batch]]
            out = net(pad(x, multiple))
            x_hat = out["x_hat"][..., :h, :w]
            bpp = sum(torch.log(lk).sum() for lk in out["likelihoods"].values()) / (-np.log(2) * batch * h * w)
            loss = lmbda * 255 ** 2 * F.mse_loss(x_hat, x) + bpp
            optimizer.zero_grad()
            aux_optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            net.aux_loss().backward()
            aux_optimizer.step()
    return time.perf_counter() - start, epochs * steps * batch


@torch.no_grad()
def code(net: torch.nn.Module, images: np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """(decoded images float32 [N, H, W, C], bytes per image) with compress() / decompress(), one image each."""
    net.eval()
    net.update(force=True)
    h, w = images.shape[1:3]
    decoded, sizes = [], []
    for image in images:
        x = pad(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0, multiple)
        packed = net.compress(x)
        sizes.append(sum(len(s[0]) for s in packed["strings"]))
        x_hat = net.decompress(packed["strings"], packed["shape"])["x_hat"][0, :, :h, :w]
        decoded.append(x_hat.clamp(0, 1).permute(1, 2, 0).numpy())
    return np.stack(decoded).astype(np.float32), np.asarray(sizes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--model", choices=("factorized", "hyperprior"), required=True)
    p.add_argument("--channels", type=int, required=True, help="N")
    p.add_argument("--latent", type=int, required=True, help="M")
    p.add_argument("--lmbdas", required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--schedule", choices=("constant", "cosine"), required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    data = np.load(args.data)
    train_images, test_images = data["train"], data["test"]
    multiple = 16 if args.model == "factorized" else 64
    result, info = {}, []
    for i, lmbda in enumerate(float(v) for v in args.lmbdas.split(",")):
        torch.manual_seed(args.seed)
        net = build(args.model, args.channels, args.latent, train_images.shape[-1])
        seconds, seen = train(net, train_images, lmbda, args.epochs, args.batch_size, args.lr, args.schedule,
                              multiple, args.seed)
        decoded, sizes = code(net, test_images, multiple)
        result[f"decoded_{i}"], result[f"bytes_{i}"] = decoded, sizes
        info.append({"lmbda": lmbda, "train_seconds": seconds, "images_per_second": seen / seconds})
        print(json.dumps(info[-1]), flush=True)
    result["info"] = np.asarray(json.dumps({"runs": info, "torch": torch.__version__,
                                            "compressai": __import__("compressai").__version__,
                                            "threads": torch.get_num_threads()}))
    np.savez_compressed(args.out, **result)


if __name__ == "__main__":
    main()
