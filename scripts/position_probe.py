"""Does a keyframe model know position words? Two probes, seconds on a CPU (docs/phrasings.md).

1. Text: how far the pooled embedding and the token outputs move when only the place changes
   ("a large red circle at the top left ..." against the other places), beside a colour swap.
2. U-Net: the place-dependent part of the x0 prediction from the same noise at several sigmas;
   per place, the mean of the red channel above the mean over places and where it sits (x, y in
   0..1). A model that knows the words puts it in the named cell; one that does not gives ~0.

    python scripts/position_probe.py shapes-phrasings
"""

from __future__ import annotations

import argparse

import torch

from keyframe.pipeline import KeyframePipeline

PLACES = ["at the top left", "at the top right", "at the bottom left", "at the bottom right",
          "in the center"]  # fmt: skip
TEMPLATE = "a large {colour} circle {place} on a navy background"


def text_probe(model) -> None:
    """Relative distance of each prompt's pooled embedding and tokens to the first prompt's
    (tokens compared position by position: meaningful for prompts of the same length only)."""
    prompts = [TEMPLATE.format(colour="red", place=p) for p in PLACES]
    prompts.append(TEMPLATE.format(colour="blue", place=PLACES[0]))
    cond = model.encode_text(prompts)
    pooled, tokens = cond["pooled"], cond["context"]
    n = int(cond["context_mask"][0].sum())
    for prompt, p, t in zip(prompts, pooled, tokens, strict=True):
        moved = (p - pooled[0]).norm() / pooled[0].norm()
        per_token = (t[:n] - tokens[0, :n]).norm(dim=-1) / tokens[0, :n].norm(dim=-1)
        print(f"text  {prompt!r}: pooled {moved:.3f}, tokens mean {per_token.mean():.3f} "
              f"max {per_token.max():.3f}")  # fmt: skip


def unet_probe(model, sigmas=(80.0, 20.0, 8.0, 3.0), repeats: int = 4) -> None:
    """Per sigma and place: the place-dependent red (mean) and its centroid."""
    prompts = [TEMPLATE.format(colour="red", place=p) for p in PLACES]
    cond = model.encode_text(prompts)
    shape = (1, model.latent_channels, *model.latent_size())
    generator = torch.Generator().manual_seed(0)
    for sigma in sigmas:
        reds = []
        for _ in range(repeats):
            x = torch.randn(shape, generator=generator).expand(len(prompts), -1, -1, -1) * sigma
            image = model.autoencoder.decode(model.denoiser(x, sigma, **cond)).float()
            reds.append(image[:, 0] - image[:, 2])
        red = torch.stack(reds).mean(0)
        extra = (red - red.mean(0, keepdim=True)).clamp(min=0)
        h, w = extra.shape[1:]
        ys, xs = torch.meshgrid(torch.arange(h) / h, torch.arange(w) / w, indexing="ij")
        cells = []
        for place, e in zip(PLACES, extra, strict=True):
            mass = e.sum().clamp_min(1e-6)
            cells.append(f"{place[3:]}: {e.mean():.3f} at "
                         f"({(e * xs).sum() / mass:.2f}, {(e * ys).sum() / mass:.2f})")  # fmt: skip
        print(f"unet  sigma {sigma:g}: " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a shipped keyframe model name, folder or .ckpt")
    args = parser.parse_args()
    model = KeyframePipeline.from_pretrained(args.model).model
    with torch.no_grad():
        text_probe(model)
        unet_probe(model)


if __name__ == "__main__":
    main()
