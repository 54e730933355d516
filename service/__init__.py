"""cnn-ablate: hyperparameter and ablation sweeps for LeNet-5, AlexNet and ZFNet."""
