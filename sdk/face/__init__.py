"""Face detection, alignment and embedding on the device.

- :mod:`sdk.face.blazeface`: BlazeFace SSD decoding (anchors, boxes, keypoints, weighted NMS).
- :mod:`sdk.face.align`: similarity alignment of keypoints to dlib's 150x150 face chip.
- :mod:`sdk.face.pipeline`: :class:`~sdk.face.pipeline.FacePipeline`, detect → align → embed
  with the models the caller names.
- :mod:`sdk.face.haar`: OpenCV Haar cascades evaluated in NumPy.
- :mod:`sdk.face.samples`: loading a sample photo and fixed-seed variants of it.

Submodules are imported on use; this package imports nothing heavy.
"""
