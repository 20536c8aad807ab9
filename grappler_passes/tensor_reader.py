"""The reads every matcher class makes: a tensor's source behind Identity
chains, its producer, its static dims and dtype (from the view's cached
shape inference)."""
from grappler_passes import shapes


class TensorReader:
    def __init__(self, view, info):
        self.view, self.info = view, info

    def _t(self, tensor):
        return self.view.source(tensor)

    def _producer(self, tensor):
        return self.view.node(self._t(tensor))

    def _dims(self, tensor):
        return shapes.shape_of(self.info, tensor) or []

    def _dtype(self, tensor):
        return shapes.dtype_of(self.info, self._t(tensor))
