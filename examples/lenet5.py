"""LeNet-5 (LeCun et al., 1998) as the classic 61,706-parameter variant: 32x32 input,
conv 5x5 (6) -> pool -> conv 5x5 (16) -> pool -> 120 -> 84 -> 10. ReLU and max pooling
stand in for the original's scaled tanh and subsampling, as in most modern re-implementations.
``size`` is the input's height and width (32 canonical; the first dense layer follows it)."""
from cnncc.frontends import dsl


def model(batch=dsl.N, size=32):
    x = dsl.input("image", (batch, 1, size, size))
    x = dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 6, 5)), 2)
    x = dsl.max_pool2d(dsl.relu(dsl.conv2d(x, 16, 5)), 2)
    x = dsl.flatten(x)
    x = dsl.relu(dsl.dense(x, 120))
    x = dsl.relu(dsl.dense(x, 84))
    return dsl.dense(x, 10)
