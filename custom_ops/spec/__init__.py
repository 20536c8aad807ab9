"""What Python knows about the compiled ops: their names, attrs, activations
and the encodings of their inputs.

The lowest Python layer: grappler_passes (which emits the ops) and tf_recopt
(which calls and tests them) both read it, and it imports neither, so the
layers import one way: custom_ops.spec <- grappler_passes <- tf_recopt.
Each name here matches a REGISTER_OP in custom_ops/ops/.
"""
PREFIX = "Recopt>"
FUSED_MLP = "Recopt>FusedMLP"
FUSED_EMBEDDING_LOOKUP = "Recopt>FusedEmbeddingLookup"
SCORE_TOPK = "Recopt>ScoreTopK"
EXACT_SCORE_TOPK = "Recopt>ExactScoreTopK"
TOPK = "Recopt>TopK"
DOT_INTERACTION = "Recopt>DotInteraction"
DIN_ATTENTION = "Recopt>DinAttention"
MULTI_HEAD_ATTENTION = "Recopt>MultiHeadAttention"
GRU = "Recopt>GRU"
AFM_POOLING = "Recopt>AfmPooling"
BILINEAR_INTERACTION = "Recopt>BilinearInteraction"
FACTORIZATION_MACHINE = "Recopt>FactorizationMachine"
CROSS_NETWORK = "Recopt>CrossNetwork"
CIN_PRODUCTS = "Recopt>CinProducts"

ALL_OPS = (FUSED_MLP, FUSED_EMBEDDING_LOOKUP, SCORE_TOPK, TOPK, DOT_INTERACTION, DIN_ATTENTION,
           MULTI_HEAD_ATTENTION, GRU, AFM_POOLING,
           BILINEAR_INTERACTION, FACTORIZATION_MACHINE, CROSS_NETWORK, EXACT_SCORE_TOPK, CIN_PRODUCTS)
