"""Silero VAD on Ray Serve: replicas, Ray's request batching, state carried by the client.

    pip install "fastlstm[ray]"
    serve run examples.ray_vad:app          # (from the checkout) HTTP on :8000/
    python examples/ray_vad.py              # the same, then streams a second of audio

See fastlstm/integrations/ray.py for why the client carries the state.
"""
import os

import numpy as np

from fastlstm.integrations.ray import build_app

MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "tests", "models", "silero", "silero_vad.onnx")

app = build_app(MODEL, num_replicas=int(os.environ.get("REPLICAS", "2")), max_batch=64,
                batch_wait_timeout_s=0.002,
                pool_options={"context": {"input": 64}, "constants": {"sr": np.array(16000)}})

if __name__ == "__main__":
    from ray import serve
    handle = serve.run(app, name="vad")
    audio = np.zeros(16000, np.float32)
    state = None
    for i in range(0, len(audio) - 511, 512):
        reply = handle.remote({"chunk": audio[i:i + 512], "state": state}).result()
        state = reply["state"]                  # carried to the next chunk
        print(f"{i / 16000:5.2f} s  speech probability {reply['outputs']['output'][0]:.3f}")
