"""What the library explains, made into runners: Keras 3, tf_keras, tf.Module, SavedModel and callables."""
