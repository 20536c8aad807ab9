"""tfrs_dlrm with the TF Model Garden DLRM's interaction setting,
DotInteraction(skip_gather=True): all F*F dot products, the upper triangle
zeroed by a tf.where instead of dropped by a boolean_mask.

Run as `TF_USE_LEGACY_KERAS=1 python -m tf_recopt.zoo.tfrs_dlrm_garden PATH SIZE SEED`.
"""
from tf_recopt.zoo import legacy_keras, tfrs_dlrm


def build(size="full"):
    return tfrs_dlrm.build(size, skip_gather=True)


if __name__ == "__main__":
    legacy_keras.main(build)
