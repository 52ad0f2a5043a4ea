"""OpenPose body model (Cao, Simon, Wei & Sheikh, 2017: "Realtime Multi-Person 2D Pose Estimation
using Part Affinity Fields"), CMU's COCO model (``pose_iter_440000``) as its PyTorch ports build it.

What was notable: bottom-up pose estimation -- one network predicts, for the whole image at once,
19 confidence maps (18 keypoints + background) and 38 part affinity fields (x and y of a unit
vector along each of 19 limbs) that a greedy matcher later assembles into skeletons, so the cost
does not grow with the number of people. A VGG-19 front (conv1_1 to conv4_2, three 2x2 pools:
features at 1/8 of the input) and two CPM layers give 128 feature channels; then six stages of
two branches (PAFs: 38 channels, heatmaps: 19), every stage after the first reading the
concatenation of both previous predictions with the features (38 + 19 + 128 = 185 channels) and
refining them with five 7x7 convolutions per branch -- a long chain of concatenations, and 7x7
kernels on 128 channels. Two outputs: (N, 38, H/8, W/8) and (N, 19, H/8, W/8).

Layer names are the Caffe model's (``conv4_3_CPM``, ``conv5_5_CPM_L1``, ``Mconv7_stage6_L2``);
ReLU follows every convolution but each branch's last. The input size must be a multiple of 8.
"""
from cnncc.frontends import dsl

#: the VGG-19 front and the CPM layers: (name, channels) 3x3 convolutions, or a pool name
FRONT = [("conv1_1", 64), ("conv1_2", 64), "pool1_stage1", ("conv2_1", 128), ("conv2_2", 128), "pool2_stage1",
         ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), ("conv3_4", 256), "pool3_stage1",
         ("conv4_1", 512), ("conv4_2", 512), ("conv4_3_CPM", 256), ("conv4_4_CPM", 128)]
PAFS, HEATMAPS = 38, 19
STAGES = 6


def conv(x, channels, kernel, name, relu=True):
    x = dsl.conv2d(x, channels, kernel, padding=kernel // 2, name=name)
    return dsl.relu(x, name=f"{name}_relu") if relu else x


def branch(x, outputs, stage, limb):
    """Stage 1: three 3x3 and a 1x1 (512); stages 2-6: five 7x7 and a 1x1 (128); then the
    prediction (a 1x1 without ReLU). ``limb`` is L1 (PAFs) or L2 (heatmaps)."""
    if stage == 1:
        for i in (1, 2, 3):
            x = conv(x, 128, 3, f"conv5_{i}_CPM_{limb}")
        x = conv(x, 512, 1, f"conv5_4_CPM_{limb}")
        return conv(x, outputs, 1, f"conv5_5_CPM_{limb}", relu=False)
    for i in range(1, 6):
        x = conv(x, 128, 7, f"Mconv{i}_stage{stage}_{limb}")
    x = conv(x, 128, 1, f"Mconv6_stage{stage}_{limb}")
    return conv(x, outputs, 1, f"Mconv7_stage{stage}_{limb}", relu=False)


def model(batch=dsl.N, size=368):
    x = dsl.input("image", (batch, 3, size, size))
    for layer in FRONT:
        x = dsl.max_pool2d(x, 2, stride=2, name=layer) if isinstance(layer, str) else conv(x, layer[1], 3, layer[0])
    features = x
    for stage in range(1, STAGES + 1):
        pafs, heatmaps = branch(x, PAFS, stage, "L1"), branch(x, HEATMAPS, stage, "L2")
        if stage < STAGES:
            x = dsl.concat([pafs, heatmaps, features], name=f"concat_stage{stage + 1}")
    return pafs, heatmaps
