# ShapeInversion web app for a GPU Hugging Face Space (Docker SDK) or any host with an NVIDIA GPU.
#
#   docker build -t shapeinv .                                   # bakes SD 1.5 and rembg's model in
#   docker build -t shapeinv --build-arg BAKE_MODEL= .           # smaller image; downloads at first start
#   docker run --gpus all -p 7860:7860 -v shapeinv-data:/home/user/data shapeinv
#   docker build -t shapeinv-ray --build-arg ENGINE=ray .         # adds Ray: one worker per GPU (README)
#
# PyTorch's Linux wheels on PyPI are CUDA builds that carry their own CUDA and cuDNN libraries, so a
# slim Python base is CUDA-capable without a second copy of CUDA from an nvidia/cuda base; the host
# (or the Space) provides only the driver. TORCH_INDEX_URL picks another CUDA build if a driver is old
# (e.g. https://download.pytorch.org/whl/cu126).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ARG BAKE_MODEL=stable-diffusion-v1-5/stable-diffusion-v1-5
ARG REMBG_MODEL=birefnet-general
ARG BAKE_CLIP=openai/clip-vit-large-patch14
# embedded (one worker thread, the default) or ray (Ray installed; the app runs its jobs on Ray actors)
ARG ENGINE=embedded

RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd -m -u 1000 user

USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/home/user/.cache/huggingface \
    REMBG_HOME=/home/user/.rembg \
    SHAPEINV_CACHE=/home/user/.cache/shapeinv \
    SHAPEINV_DATA=/home/user/data \
    SHAPEINV_HOST=0.0.0.0 \
    SHAPEINV_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False
WORKDIR /home/user/app

COPY --chown=user requirements.txt requirements-ray.txt ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --user "torch==2.13.0" --index-url "$TORCH_INDEX_URL"; fi \
    && pip install --user -r requirements.txt \
    && if [ "$ENGINE" = ray ]; then pip install --user -r requirements-ray.txt; fi
ENV SHAPEINV_ENGINE=${ENGINE}

# Model weights in the image (network is there at build time, and only then is it certain):
# the diffusers folders of the default model (fp32 safetensors only; SDXL's second text encoder too),
# and rembg's mask model.
RUN mkdir -p "$HF_HOME" "$REMBG_HOME" "$SHAPEINV_CACHE" "$SHAPEINV_DATA" \
    && if [ -n "$BAKE_MODEL" ]; then python -c "import sys; from huggingface_hub import snapshot_download; \
snapshot_download(sys.argv[1], allow_patterns=['model_index.json', 'scheduler/*', 'tokenizer/*', 'tokenizer_2/*', \
'feature_extractor/*', 'text_encoder/config.json', 'text_encoder/model.safetensors', 'text_encoder_2/config.json', \
'text_encoder_2/model.safetensors', 'unet/config.json', \
'unet/diffusion_pytorch_model.safetensors', 'vae/config.json', 'vae/diffusion_pytorch_model.safetensors'])" \
"$BAKE_MODEL"; fi \
    && if [ -n "$BAKE_CLIP" ]; then python -c "import sys; from huggingface_hub import snapshot_download; \
snapshot_download(sys.argv[1], allow_patterns=['*.json', '*.txt', 'model.safetensors'])" "$BAKE_CLIP"; fi \
    && if [ -n "$REMBG_MODEL" ]; then python -c "import sys; from rembg import new_session; new_session(sys.argv[1])" \
"$REMBG_MODEL"; fi
# With the weights baked in, never reach for the hub at run time (a missing file fails fast instead).
ENV SHAPEINV_MODEL=${BAKE_MODEL:-stable-diffusion-v1-5/stable-diffusion-v1-5} \
    SHAPEINV_CLIP_MODEL=${BAKE_CLIP:-none} \
    HF_HUB_OFFLINE=${BAKE_MODEL:+1}

COPY --chown=user pyproject.toml README.md ./
COPY --chown=user shapeinv_core ./shapeinv_core
COPY --chown=user app ./app
COPY --chown=user assets ./assets

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/gradio_api/info' % os.environ.get('SHAPEINV_PORT', '7860'), timeout=4)"

CMD ["python", "-m", "app"]
