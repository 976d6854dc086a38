"""cs231n/classifiers of the later editions: fc_net and cnn."""
