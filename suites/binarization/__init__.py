"""BiBench binarization operators (BNN, XNOR-Net, DoReFa, Bi-Real) applied to fixed backbones."""
