"""Keras: fit(shuffle=True) is the default, and it shuffles a PyDataset's batch order."""
import keras
import numpy as np


class Batches(keras.utils.PyDataset):
    def __init__(self):
        super().__init__()  # workers=1, use_multiprocessing=False by default
        self.seen = []

    def __len__(self):
        return 8

    def __getitem__(self, i):
        self.seen.append(i)
        return np.full((2, 1), i, "float32"), np.zeros((2, 1), "float32")

keras.utils.set_random_seed(0)  # seeds Python's random, which the shuffle uses
model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
model.compile("sgd", "mse", run_eagerly=True)
for shuffle in (True, False):
    data = Batches()
    model.fit(data, epochs=1, shuffle=shuffle, verbose=0)
    epoch = data.seen[-8:]  # fit reads the first items once more, to learn the shapes
    print(f"shuffle_{shuffle}_batches_out_of_place = {sum(i != j for j, i in enumerate(epoch))}")
# expect: shuffle_True_batches_out_of_place in [2, 8]
# expect: shuffle_False_batches_out_of_place in [0, 0]
