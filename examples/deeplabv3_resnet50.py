"""DeepLab-v3 (Chen, Papandreou, Schroff & Adam, 2017: "Rethinking Atrous Convolution for
Semantic Image Segmentation") with a ResNet-50 backbone, torchvision's ``deeplabv3_resnet50``
(21 PASCAL VOC classes, without the training-only auxiliary FCN head).

What was notable: atrous (dilated) convolution instead of downsampling. The backbone's last
stages trade their stride for dilation, so features stay at 1/8 (or 1/16) of the input while
the receptive field keeps growing; Atrous Spatial Pyramid Pooling then looks at several scales
at once -- a 1x1 convolution, three 3x3 convolutions dilated 12, 24 and 36 (6, 12, 18 at output
stride 16, as in the paper) and an image-level branch (global average pool, 1x1, broadcast back
by bilinear upsampling) -- concatenated, projected to 256 channels, classified per pixel and
bilinearly upsampled to the input size. 39,638,869 parameters (the ResNet-50 body without its fc,
plus the head).

``output_stride`` is 8 (torchvision's choice: layer3 and layer4 dilated 2 and 4) or 16 (only
layer4 dilated). Layer names follow torchvision's module paths with dots as underscores
(``backbone_layer4_2_conv2``, ``classifier_0_convs_1_0`` is the first dilated ASPP convolution).
The bottleneck blocks live in ``_resnet.py``. Output (N, 21, size, size): per-pixel class scores.
"""
from cnncc.errors import ModelError
from cnncc.frontends import dsl

from _resnet import bottleneck, stages, stem

LAYERS = (3, 4, 6, 3)
CLASSES = 21
ASPP_CHANNELS = 256
#: output stride -> (which of layer2..4 trade their stride for dilation, ASPP rates)
OUTPUT_STRIDE = {8: ((False, True, True), (12, 24, 36)), 16: ((False, False, True), (6, 12, 18))}


def conv_bn_relu(x, channels, kernel, p, dilation=1):
    """nn.Sequential(conv without bias, BN, ReLU) named p_0, p_1, p_2."""
    x = dsl.conv2d(x, channels, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False,
                   name=f"{p}_0")
    return dsl.relu(dsl.batch_norm(x, name=f"{p}_1"), name=f"{p}_2")


def image_pooling(x, p):
    """The image-level branch: global average pool, 1x1 conv + BN + ReLU, back to the grid."""
    y = dsl.global_avg_pool(x, name=f"{p}_0")
    y = dsl.conv2d(y, ASPP_CHANNELS, 1, bias=False, name=f"{p}_1")
    y = dsl.relu(dsl.batch_norm(y, name=f"{p}_2"), name=f"{p}_3")
    return dsl.upsample2d(y, size=tuple(int(d) for d in x.shape[2:]), mode="bilinear", name=f"{p}_upsample")


def aspp(x, rates, p="classifier_0"):
    branches = [conv_bn_relu(x, ASPP_CHANNELS, 1, f"{p}_convs_0")]
    branches += [conv_bn_relu(x, ASPP_CHANNELS, 3, f"{p}_convs_{i}", dilation=r) for i, r in enumerate(rates, 1)]
    branches.append(image_pooling(x, f"{p}_convs_{len(rates) + 1}"))
    x = dsl.concat(branches, name=f"{p}_concat")
    x = conv_bn_relu(x, ASPP_CHANNELS, 1, f"{p}_project")
    return dsl.dropout(x, 0.5, name=f"{p}_project_3")


def model(batch=dsl.N, size=512, output_stride=8, classes=CLASSES):
    if output_stride not in OUTPUT_STRIDE:
        raise ModelError(f"output_stride {output_stride}: expected one of {sorted(OUTPUT_STRIDE)}",
                             attr="output_stride", fix="use 8 (torchvision's choice) or 16")
    dilate, rates = OUTPUT_STRIDE[output_stride]
    image = dsl.input("image", (batch, 3, size, size))
    x = stages(stem(image, prefix="backbone_"), bottleneck, LAYERS, dilate=dilate, prefix="backbone_")
    x = aspp(x, rates)
    x = dsl.conv2d(x, ASPP_CHANNELS, 3, padding=1, bias=False, name="classifier_1")
    x = dsl.relu(dsl.batch_norm(x, name="classifier_2"), name="classifier_3")
    x = dsl.conv2d(x, classes, 1, name="classifier_4")
    return dsl.upsample2d(x, size=(size, size), mode="bilinear", name="upsample")
