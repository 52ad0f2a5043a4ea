"""SegNet (Badrinarayanan, Kendall & Cipolla, 2015: "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation").

What was notable: the decoder upsamples with the encoder's max-pooling *indices* -- each value
goes back to the position its window's maximum came from ("max unpooling"), zeros elsewhere --
so no upsampling weights are learnt and only the indices (not whole feature maps, as in U-Net's
skips) travel from encoder to decoder. The encoder is VGG-16's 13 convolutions with batch norm;
the decoder mirrors it.

Variant: convolutions before a batch norm carry no bias (the BN's shift does that job); the last
layer is a 3x3 convolution with bias to the class scores (12 classes: CamVid, the paper's road
scenes). Input size: any multiple of 32 (five 2x2 poolings); output (N, 12, H, W).
"""
from cnncc.frontends import dsl

#: (channels of each 3x3 conv) per encoder stage, as VGG-16
ENCODER = [(64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)]
#: the decoder stage that undoes encoder stage s: its convs' channels (the last one narrows to the
#: next stage's width); stage 1 ends in the classifier instead
DECODER = {5: (512, 512, 512), 4: (512, 512, 256), 3: (256, 256, 128), 2: (128, 64), 1: (64,)}
CLASSES = 12


def conv_bn_relu(x, channels, name):
    x = dsl.conv2d(x, channels, 3, padding=1, bias=False, name=f"{name}_conv")
    return dsl.relu(dsl.batch_norm(x, name=f"{name}_bn"), name=f"{name}_relu")


def model(batch=dsl.N, size=224):
    x = dsl.input("image", (batch, 3, size, size))
    indices, sizes = {}, {}
    for s, widths in enumerate(ENCODER, start=1):
        for i, channels in enumerate(widths, start=1):
            x = conv_bn_relu(x, channels, f"enc{s}_{i}")
        sizes[s] = x.shape[2:]
        x, indices[s] = dsl.max_pool2d_with_indices(x, 2, stride=2, name=f"pool{s}")
    for s in (5, 4, 3, 2, 1):
        x = dsl.max_unpool2d(x, indices[s], 2, stride=2, output_size=sizes[s], name=f"unpool{s}")
        for i, channels in enumerate(DECODER[s], start=1):
            x = conv_bn_relu(x, channels, f"dec{s}_{i}")
    return dsl.conv2d(x, CLASSES, 3, padding=1, name="classifier")
