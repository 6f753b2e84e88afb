# The Refiner web app. CPU torch by default; for NVIDIA GPUs build with a CUDA wheel index, e.g.
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t refiner .
#   docker run --gpus all -p 8501:8501 -v refiner-workspaces:/workspaces refiner
# Keep the versions in step with requirements.txt (torch is pinned there too).
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    REFINER_WORKSPACES=/workspaces

# A C compiler: the native RNN kernel (refiner/models/rnn_step.c) and torch.compile build on
# first use; without one, inference falls back to slower torch ops with the same results.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
# torch first from the chosen index, so requirements.txt finds its pin already satisfied
RUN pip install --index-url "$TORCH_INDEX" "$(grep -E '^torch==' requirements.txt)" \
 && pip install -r requirements.txt

COPY refiner ./refiner
COPY webapp ./webapp
COPY pages ./pages
COPY assets ./assets
COPY .streamlit ./.streamlit
COPY app.py .

VOLUME ["/workspaces"]
EXPOSE 8501
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health')"
CMD ["python", "-m", "streamlit", "run", "app.py", "--server.address", "0.0.0.0", "--server.port", "8501", "--browser.gatherUsageStats", "false"]
