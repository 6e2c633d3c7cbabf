"""How much a model's self-attention carries, which bounds what MasaCtrl can do on it.

MasaCtrl acts only through self-attention keys and values. If a model's self-attention is close to uniform
(each query averages every position) and removing it barely changes the image, the source's keys and values
carry little appearance, and MasaCtrl edits come out close to DDIM inversion + target prompt. Prints, per
self-attention layer, the attention entropy (1 = uniform) and the output/input norm ratio over a generation;
how far removing self-attention moves that generation, beside how far another prompt does; and, for one tune
edit, how far MasaCtrl (every step, every layer) moves the target from the uncontrolled one.

    python eval/masactrl_diagnosis.py --model /path/to/recipe.toml --guidance-scale 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _Zero:
    """A self-attention processor that outputs nothing (the residual path alone remains)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
        import torch

        return torch.zeros_like(hidden_states)


def _difference(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="recipe name or file, or pipeline folder (default: the embedded model)")
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--num-steps", type=int, default=50)
    parser.add_argument("--case", type=int, default=2, help="index of the tune edit used for the last line")
    args = parser.parse_args(argv)
    import torch

    from taocache.edit import masactrl as M
    from taocache.edit.cases import build_cases
    from taocache.recipes import load_pipeline
    from taocache.world import render

    torch.set_num_threads(1)
    pipe, _ = load_pipeline(args.model, kind="image")
    case = build_cases(args.case + 1, seed=0, scenes="tune")[args.case]
    source, target = case.source.caption, case.target.caption
    layers = M.self_attention_layers(pipe.unet)
    modules = dict(pipe.unet.named_modules())
    stats: dict = {name: [] for name in layers}

    def measure(name):
        def hook(module, hook_args, kwargs, out):
            h = hook_args[0] if hook_args else kwargs["hidden_states"]
            q, k = module.to_q(h), module.to_k(h)
            b, n, c = q.shape
            d = c // module.heads
            q, k = (x.view(b, n, module.heads, d).transpose(1, 2) for x in (q, k))
            w = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
            entropy = -(w * w.clamp_min(1e-12).log()).sum(-1).mean() / np.log(n)
            stats[name].append((float(entropy), float(out.norm() / h.norm()), n))

        return hook

    def generate(prompt):
        generator = torch.Generator().manual_seed(0)
        return pipe(prompt, num_inference_steps=20, guidance_scale=args.guidance_scale, generator=generator,
                    output_type="np").images[0]

    hooks = [modules[n].register_forward_hook(measure(n), with_kwargs=True) for n in layers]
    try:
        with torch.no_grad():
            full = generate(source)
    finally:
        for hook in hooks:
            hook.remove()
    for name in layers:
        s = np.array(stats[name])
        print(f"{name}: {int(s[0, 2])} tokens, entropy {s[:, 0].mean():.3f}, out/in norm {s[:, 1].mean():.3f}")
    original = pipe.unet.attn_processors
    try:
        pipe.unet.set_attn_processor({k: _Zero() if k.endswith("attn1.processor") else v for k, v in original.items()})
        without = generate(source)
    finally:
        pipe.unet.set_attn_processor(dict(original))
    print(f"mean |change| without self-attention {_difference(without, full):.4f}; "
          f"with the target prompt instead {_difference(generate(target), full):.4f}")
    image = render(case.source, seed=case.seed)
    steps, guidance = args.num_steps, args.guidance_scale
    off, reconstruction = M.masactrl_edit(pipe, image, source, target, steps, guidance, steps, return_source=True)
    on = M.masactrl_edit(pipe, image, source, target, steps, guidance, 0, 0.0)
    paper = M.masactrl_edit(pipe, image, source, target, steps, guidance)
    print(f"{source!r} -> {target!r}: MasaCtrl on (every step and layer) vs off {_difference(on, off):.4f}; "
          f"paper's setting vs off {_difference(paper, off):.4f}; off vs source reconstruction "
          f"{_difference(off, reconstruction):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
