"""SqueezeNet 1.1 (Iandola et al., 2016: "SqueezeNet: AlexNet-level accuracy with 50x fewer
parameters and <0.5MB model size"), torchvision's ``squeezenet1_1``.

What was notable: the Fire module -- a 1x1 "squeeze" layer feeding parallel 1x1 and 3x3
"expand" layers whose outputs are concatenated -- and no dense layers at all: a 1x1 conv to
1000 classes followed by global average pooling. Version 1.1 starts with a 3x3/64 conv and pools
earlier: 2.4x less computation than 1.0 for the same accuracy. 1,235,496 parameters.
Pools use ceil mode, as in torchvision. Names follow the paper (``fire2_squeeze`` ... ``conv10``).
"""
from cnncc.frontends import dsl

#: fire module: (squeeze, expand 1x1, expand 3x3); a max pool precedes fire2, fire4 and fire6
FIRES = {2: (16, 64, 64), 3: (16, 64, 64), 4: (32, 128, 128), 5: (32, 128, 128),
         6: (48, 192, 192), 7: (48, 192, 192), 8: (64, 256, 256), 9: (64, 256, 256)}
POOL_BEFORE = {2: "pool1", 4: "pool3", 6: "pool5"}


def fire(x, i):
    squeeze, e1, e3 = FIRES[i]
    p = f"fire{i}"
    s = dsl.relu(dsl.conv2d(x, squeeze, 1, name=f"{p}_squeeze"), name=f"{p}_squeeze_relu")
    a = dsl.relu(dsl.conv2d(s, e1, 1, name=f"{p}_expand1x1"), name=f"{p}_expand1x1_relu")
    b = dsl.relu(dsl.conv2d(s, e3, 3, padding=1, name=f"{p}_expand3x3"), name=f"{p}_expand3x3_relu")
    return dsl.concat([a, b], name=f"{p}_concat")


def model(batch=dsl.N, size=224):
    x = dsl.input("image", (batch, 3, size, size))
    x = dsl.relu(dsl.conv2d(x, 64, 3, stride=2, name="conv1"), name="relu1")
    for i in FIRES:
        if i in POOL_BEFORE:
            x = dsl.max_pool2d(x, 3, stride=2, ceil_mode=True, name=POOL_BEFORE[i])
        x = fire(x, i)
    x = dsl.dropout(x, 0.5, name="drop9")
    x = dsl.relu(dsl.conv2d(x, 1000, 1, name="conv10"), name="relu10")
    return dsl.flatten(dsl.global_avg_pool(x, name="avgpool"), name="flatten")
