"""The general interpolator: motion diffused at a working resolution, frames made at the keys' own.

model.py     the network (a video U-Net over motion fields) and its config
motion.py    motion fields: the flow init between two keys, the blend of two warped keys
warp.py      full-resolution frames from working-resolution motion (the keys' own pixels)
pipeline.py  inference: keys at frame numbers in, every frame out, at the keys' resolution
data.py      training windows from `animatic dataset layers` clips (exact motion as the target)
trainer.py   the LightningModule
"""
