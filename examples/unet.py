"""A small U-Net (Ronneberger, Fischer & Brox, 2015: "U-Net: Convolutional Networks for
Biomedical Image Segmentation").

What was notable: an encoder-decoder for dense (per-pixel) prediction whose decoder, at every
resolution, concatenates the encoder's feature map of the same size (skip connections), so
fine localization survives the bottleneck. Trained from very few images; the shape of most
segmentation networks since.

Variant: a small teaching-size U-Net -- three downsamplings, 16-32-64-128 channels, 'same'
(padding 1) 3x3 convolutions with batch norm, so no cropping is needed (the paper used valid
convolutions and cropped the skips). Two decoder stages go up with a 2x2/2 transposed
convolution (the paper's "up-convolution"); the last goes up with bilinear upsampling followed
by a 1x1 convolution, so both ways of growing a feature map appear. Input 64x64 (any multiple
of 8 works), output (N, 2, H, W): per-pixel class scores.
"""
from cnncc.frontends import dsl

WIDTHS = (16, 32, 64, 128)     # encoder level 1..3, then the bottleneck
CLASSES = 2


def double_conv(x, channels, p):
    """(3x3 conv, padding 1 -> BN -> ReLU) twice."""
    for i in (1, 2):
        x = dsl.conv2d(x, channels, 3, padding=1, bias=False, name=f"{p}_conv{i}")
        x = dsl.relu(dsl.batch_norm(x, name=f"{p}_bn{i}"), name=f"{p}_relu{i}")
    return x


def model(batch=dsl.N, size=64):
    x = dsl.input("image", (batch, 3, size, size))
    skips = []
    for level, channels in enumerate(WIDTHS[:-1], start=1):
        x = double_conv(x, channels, f"enc{level}")
        skips.append(x)
        x = dsl.max_pool2d(x, 2, stride=2, name=f"pool{level}")
    x = double_conv(x, WIDTHS[-1], "bottleneck")
    for level in (3, 2, 1):
        channels = WIDTHS[level - 1]
        if level > 1:
            x = dsl.conv_transpose2d(x, channels, 2, stride=2, name=f"up{level}_deconv")
        else:
            x = dsl.upsample2d(x, 2, mode="bilinear", align_corners=False, name=f"up{level}_upsample")
            x = dsl.conv2d(x, channels, 1, name=f"up{level}_conv")
        x = dsl.concat([skips[level - 1], x], name=f"up{level}_concat")
        x = double_conv(x, channels, f"dec{level}")
    return dsl.conv2d(x, CLASSES, 1, name="head")
