"""cs231n/classifiers: fc_net (TwoLayerNet, FullyConnectedNet) and cnn (ThreeLayerConvNet)."""
