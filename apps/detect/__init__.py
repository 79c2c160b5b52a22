"""Real-time YOLO detection: device pipeline (``app``), CLI (``cli``), COCO evaluation (``eval``),
demo, and the host-side Keras model and training recipe (``model``, ``data``, ``train``)."""
