"""Host side: Keras to TFLite conversion, calibration, accuracy reports, Edge TPU readiness.

Imports TensorFlow lazily, only inside the functions that need it.
"""
