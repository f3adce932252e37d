"""Step-time overhead of MultiMedModel over its bare encoder(s): forward + loss + backward on the same batch."""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

from multimed_hf.configuration_multimed import MultiMedConfig
from multimed_hf.modeling_multimed import MultiMedModel

__all__ = ["main"]


def _vit(args):
    return AutoConfig.for_model(
        "vit", hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden, image_size=args.image_size, patch_size=16,
    )


def _timed(step, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def _bench_case(name, fusion, method, args, device):
    """One task: brain_tumor (one modality, every row) or diabetic_retinopathy (OCT rows and fundus rows)."""
    torch.manual_seed(0)
    task = "brain_tumor" if name == "1 modality" else "diabetic_retinopathy"
    modalities = ["mri"] if task == "brain_tumor" else ["oct", "fundus"]
    config = MultiMedConfig.from_tasks([task], encoders={m: _vit(args) for m in modalities}, hidden_size=args.shared,
                                       fusion=fusion, fusion_method=method, dropout=0.0)
    model = MultiMedModel(config).to(device).train()
    bare = {m: AutoModel.from_config(_vit(args), add_pooling_layer=False).to(device).train() for m in modalities}
    for m in modalities:  # the same encoder weights on both sides
        bare[m].load_state_dict(model.encoders[m].model.state_dict())
    heads = {m: torch.nn.Linear(args.hidden, 4).to(device) for m in modalities}
    b = args.batch
    split = b if task == "brain_tumor" else b // 2
    presence = {modalities[0]: torch.arange(b, device=device) < split}
    if len(modalities) == 2:
        presence[modalities[1]] = ~presence[modalities[0]]
    pixels = {m: torch.randn(int(presence[m].sum()), 3, args.image_size, args.image_size, device=device)
              for m in modalities}
    target = torch.randint(0, 4, (b,), device=device)
    labels = {"tumor": target} if task == "brain_tumor" else {"oct_finding": target, "dr_grade": target}

    def bare_step():
        loss = 0.0
        for m in modalities:
            h = bare[m](pixel_values=pixels[m]).last_hidden_state[:, 0]
            loss = loss + F.cross_entropy(heads[m](h), target[presence[m]])
        loss.backward()

    def wrapped_step():
        out = model(task=task, inputs={m: {"pixel_values": pixels[m]} for m in modalities}, presence=presence,
                    labels=labels)
        out.loss.backward()

    for _ in range(args.warmup):
        bare_step()
        wrapped_step()
    bare_times, wrapped_times = [], []
    for _ in range(args.steps):  # alternate single steps, so drifting machine load hits both alike
        bare_times.append(_timed(bare_step, device))
        wrapped_times.append(_timed(wrapped_step, device))
    return (statistics.median(bare_times) * 1e3, statistics.median(wrapped_times) * 1e3,
            min(wrapped_times) / min(bare_times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=192, help="ViT hidden size")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--shared", type=int, default=256, help="MultiMed shared hidden size")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=15, help="timed steps of each side, alternating")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of this process (default 1, as DataLoader workers get: two threads of "
                             "the one-process side thrashed on the shared 2-core machine, 5-11x slower)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cases = [
        ("1 modality", "intermediate", "concat"),
        ("1 modality", "intermediate", "attention"),
        ("2 modalities, split rows", "intermediate", "concat"),
        ("2 modalities, split rows", "intermediate", "attention"),
        ("2 modalities, split rows", "late", "weighted_mean"),
    ]
    print(f"device {device}, torch threads {torch.get_num_threads()}, ViT hidden {args.hidden} x {args.layers} layers, "
          f"image {args.image_size}, batch {args.batch}, median of {args.steps} alternating steps")
    print("ratio = wrapper / bare step time, from the medians; 'min ratio' from the fastest steps (robust to load)")
    print(f"{'case':<26} {'fusion':<27} {'bare ms':>9} {'wrapper ms':>11} {'ratio':>7} {'min ratio':>10}")
    for name, fusion, method in cases:
        bare_ms, wrapped_ms, min_ratio = _bench_case(name, fusion, method, args, device)
        print(f"{name:<26} {fusion + ' ' + method:<27} {bare_ms:9.1f} {wrapped_ms:11.1f} {wrapped_ms / bare_ms:7.3f} "
              f"{min_ratio:10.3f}")


if __name__ == "__main__":
    main()
