"""Reference backbones (MLP, VGG-small, CIFAR ResNets, MobileNetV2, SimpleNet) that every task can build."""
