"""Reads a folder of TensorBoard runs back with TensorBoard's own reader (tests/tensorboard.rs calls it).

    python tests/tb_read.py LOGDIR OUT_DIR

For every run TensorBoard finds under LOGDIR (EventMultiplexer.AddRunsFromDirectory, as `tensorboard --logdir`
does), reads it with EventAccumulator and prints one JSON object: {run: {"scalars": {tag: [[step, value], ...]}, "images": {tag: [[step, width,
height, file], ...]}, "text": {tag: [[step, text], ...]}}}, with each image's encoded bytes written to OUT_DIR.
"""
import json
import os
import sys

from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing import plugin_event_multiplexer as pem

logdir, out = sys.argv[1], sys.argv[2]
guidance = {ea.SCALARS: 0, ea.IMAGES: 0, ea.TENSORS: 0}
mux = pem.EventMultiplexer(size_guidance=guidance).AddRunsFromDirectory(logdir)
mux.Reload()
result = {}
for k, run in enumerate(sorted(mux.Runs())):
    # The multiplexer finds the runs as `tensorboard --logdir` does; the classic accumulator reads each one's
    # scalars, images and text as written.
    acc = ea.EventAccumulator(os.path.join(logdir, run), size_guidance=guidance)
    acc.Reload()
    tags = acc.Tags()
    entry = {"scalars": {}, "images": {}, "text": {}}
    for tag in tags["scalars"]:
        entry["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
    for tag in tags["images"]:
        rows = []
        for i, e in enumerate(acc.Images(tag)):
            path = os.path.join(out, f"run{k}-{tag}-{i}.png")
            with open(path, "wb") as f:
                f.write(e.encoded_image_string)
            rows.append([e.step, e.width, e.height, path])
        entry["images"][tag] = rows
    for tag in tags["tensors"]:
        entry["text"][tag] = [[e.step, e.tensor_proto.string_val[0].decode()] for e in acc.Tensors(tag)]
    result[run] = entry
print(json.dumps(result))
