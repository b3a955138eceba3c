"""The training suite: training tricks (losses, distillation, regularizers, optimizers), most as modifiers.

A trick that changes how any method trains is a training modifier (:mod:`effbench.modifiers`), written
after a method with ``+``: ``--method resnet-cifar+kd:teacher=vgg-small``.
"""
