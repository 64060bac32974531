"""The Python side of the SD adapter-files speed comparison (issue 16, point 4), and the full-size
fixtures it needs. Not run by the tests; Benchmarks/sd-merge.sh runs it beside `lora`.

    bench_sd_merge.py setup  DIR    a diffusers pipeline with Stable Diffusion 1.5's configuration and
                                    random weights (UNet 860 M parameters, CLIP ViT-L/14 text encoder,
                                    VAE; fp32), and a random rank-32 kohya LoRA (alpha 16) on every module
                                    kohya's default network adapts (UNet transformer blocks, text encoder)
    bench_sd_merge.py merge  DIR OUT     diffusers: from_pretrained, load_lora_weights, fuse_lora(1.0),
                                         unload_lora_weights, save_pretrained (the equivalent of `lora merge`)
    bench_sd_merge.py extract DIR TUNED OUT   kohya's extract_lora_from_models.py algorithm (both models'
                                         state dicts, per module diff, torch.linalg.svd, 0.99 quantile clamp,
                                         rank 32), written as a kohya file

Each command prints one JSON line with its wall time and peak resident memory.
"""
import json
import os
import resource
import sys
import time

import torch
from safetensors.torch import load_file, save_file

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
RANK, ALPHA = 32, 16.0


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def setup(out):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)   # the defaults are SD 1.5's
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                                        vocab_size=49408, max_position_embeddings=77, projection_dim=768))
    vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=2, sample_size=512)
    pipe = StableDiffusionPipeline(unet=unet, text_encoder=text, vae=vae, scheduler=DDIMScheduler(), tokenizer=None,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(os.path.join(out, "sd15-random"))
    g = torch.Generator().manual_seed(1)
    lora = {}
    for prefix, model, keep in [("lora_unet_", unet, lambda n: ".attentions." in n), ("lora_te_", text, lambda n: True)]:
        for name, module in model.named_modules():
            if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) or not keep(name):
                continue
            if prefix == "lora_te_" and not name.endswith(("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")):
                continue
            w = module.weight
            key = prefix + (name if prefix == "lora_unet_" else "text_model." + name).replace(".", "_")
            down_shape = (RANK,) + tuple(w.shape[1:])
            up_shape = (w.shape[0], RANK) + ((1, 1) if w.dim() == 4 else ())
            lora[key + ".lora_down.weight"] = torch.randn(down_shape, generator=g) * 0.01
            lora[key + ".lora_up.weight"] = torch.randn(up_shape, generator=g) * 0.01
            lora[key + ".alpha"] = torch.tensor(ALPHA)
    save_file(lora, os.path.join(out, "lora-r32.safetensors"), metadata={"ss_network_dim": str(RANK), "ss_network_alpha": str(ALPHA)})
    print(json.dumps({"unet_parameters": sum(p.numel() for p in unet.parameters()), "lora_modules": len(lora) // 3}))


def merge(base, out):
    from diffusers import StableDiffusionPipeline
    start = time.time()
    pipe = StableDiffusionPipeline.from_pretrained(base, tokenizer=None, safety_checker=None, feature_extractor=None,
                                                   image_encoder=None, requires_safety_checker=False)
    pipe.load_lora_weights(os.path.join(os.path.dirname(base), "lora-r32.safetensors"))
    pipe.fuse_lora(lora_scale=1.0)
    pipe.unload_lora_weights()
    pipe.save_pretrained(out)
    print(json.dumps({"impl": "diffusers", "op": "merge", "seconds": time.time() - start, "peak_mib": peak_mib()}))


def extract(base, tuned, out):
    start = time.time()
    a = {**{"unet." + k: v for k, v in load_file(os.path.join(base, "unet/diffusion_pytorch_model.safetensors")).items()},
         **{"te." + k: v for k, v in load_file(os.path.join(base, "text_encoder/model.safetensors")).items()}}
    b = {**{"unet." + k: v for k, v in load_file(os.path.join(tuned, "unet/diffusion_pytorch_model.safetensors")).items()},
         **{"te." + k: v for k, v in load_file(os.path.join(tuned, "text_encoder/model.safetensors")).items()}}
    lora = {}
    for key, w0 in a.items():
        if not key.endswith(".weight") or w0.dim() < 2:
            continue
        name = key[: -len(".weight")]
        if key.startswith("unet.") and (".attentions." not in name or (w0.dim() == 4 and w0.shape[2] > 1)):
            continue
        if key.startswith("te.") and not name.endswith(("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")):
            continue
        diff = (b[key] - w0).float()
        mat = diff.flatten(1)
        rank = min(RANK, *mat.shape)
        u, s, vh = torch.linalg.svd(mat)
        u = u[:, :rank] @ torch.diag(s[:rank])
        vh = vh[:rank, :]
        dist = torch.cat([u.flatten(), vh.flatten()])
        hi = torch.quantile(dist, 0.99)
        u, vh = u.clamp(-hi, hi), vh.clamp(-hi, hi)
        if w0.dim() == 4:
            u = u.reshape(u.shape[0], u.shape[1], 1, 1)
            vh = vh.reshape(rank, *w0.shape[1:])
        k = ("lora_unet_" + name[5:] if key.startswith("unet.") else "lora_te_text_model_" + name[3:]).replace(".", "_")
        lora[k + ".lora_up.weight"] = u.contiguous()
        lora[k + ".lora_down.weight"] = vh.contiguous()
        lora[k + ".alpha"] = torch.tensor(float(rank))
    save_file(lora, out)
    print(json.dumps({"impl": "kohya algorithm (torch)", "op": "extract", "seconds": time.time() - start, "peak_mib": peak_mib(),
                      "modules": len(lora) // 3}))


if __name__ == "__main__":
    {"setup": setup, "merge": merge, "extract": extract}[sys.argv[1]](*sys.argv[2:])
