"""Image backbone (torchvision ResNet split after its stem) and the Pose2Feat heatmap fusion (spec 1.3 steps 2-5)."""
import torch
from torch import nn
from torchvision.models import resnet

# Depth -> (block, blocks per stage). 10, one block per stage, is a size for training from scratch on a CPU.
RESNET_BLOCKS = {
    10: (resnet.BasicBlock, (1, 1, 1, 1)),
    18: (resnet.BasicBlock, (2, 2, 2, 2)),
    34: (resnet.BasicBlock, (3, 4, 6, 3)),
    50: (resnet.Bottleneck, (3, 4, 6, 3)),
    101: (resnet.Bottleneck, (3, 4, 23, 3)),
    152: (resnet.Bottleneck, (3, 8, 36, 3)),
}


# Initialisations for training from scratch: the official N(0, 0.001) convolutions (spec 2.4), or torchvision's own.
BACKBONE_INITS = ("official", "kaiming")


class ResNetBackbone(resnet.ResNet):
    """torchvision ResNet without avgpool/fc; parameter names are torchvision's (conv1, bn1, layer1..4).

    `stem(img)` gives (B, 64, H/4, W/4) after the max-pool; `body(x)` runs layer1..layer4 and gives
    (B, out_channels, H/32, W/32).
    """

    def __init__(self, depth, init="official"):
        if depth not in RESNET_BLOCKS:
            raise ValueError(f"resnet_type={depth} is not supported; choose one of {sorted(RESNET_BLOCKS)}")
        block, layers = RESNET_BLOCKS[depth]
        super().__init__(block, list(layers))
        del self.avgpool, self.fc
        self.stem_channels = 64
        self.out_channels = 512 * block.expansion
        if init not in BACKBONE_INITS:
            raise ValueError(f"backbone init {init!r}: expected one of {BACKBONE_INITS}")
        if init == "kaiming":
            return  # torchvision's own initialisation (He normal convs, BN 1/0)
        # The official init when training from scratch (spec 2.4): convs N(0, 0.001), BN 1/0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, img):
        return self.maxpool(self.relu(self.bn1(self.conv1(img))))

    def body(self, x):
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, img):
        return self.body(self.stem(img))


class Pose2Feat(nn.Module):
    """Fuses the stem features with the input-pose heatmaps: concat -> 3x3 conv -> BN -> ReLU.

    image_gate: multiply the stem features by a learnable scalar that starts at `image_gate_init` (not in the
    paper). Trained from scratch, the random stem's dense image features swamp the sparse heatmaps and the network
    is slow to find the 2D pose in them; with a small gate it first learns from the pose and lets the image in as
    that pays off. At exactly 0 the stem receives no gradient until the gate moves; Adam's updates do not depend on
    the gradient's scale, so a small nonzero start lets the stem learn at full speed while its features stay quiet.
    """

    def __init__(self, feat_channels, num_joints, image_gate=False, image_gate_init=0.0):
        super().__init__()
        self.image_gate = nn.Parameter(torch.tensor(float(image_gate_init))) if image_gate else None
        self.conv = nn.Sequential(
            nn.Conv2d(feat_channels + num_joints, feat_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(feat_channels),
            nn.ReLU(inplace=True),
        )
        nn.init.normal_(self.conv[0].weight, std=0.001)
        nn.init.zeros_(self.conv[0].bias)

    def forward(self, feat, heatmaps):
        """feat (B, C, h, w), heatmaps (B, J, h, w) -> (B, C, h, w)."""
        if self.image_gate is not None:
            feat = feat * self.image_gate.to(feat.dtype)
        return self.conv(torch.cat([feat, heatmaps.to(feat.dtype)], dim=1))


def gaussian_heatmaps(joints_xy, joints_mask, grid_y, grid_x, sigma):
    """Input-pose heatmaps (spec 1.3-2): one Gaussian per joint on the heatmap grid, zero for invalid joints.

    joints_xy (B, J, 2) in heatmap pixels; joints_mask (B, J, 1); grid_y (h, 1), grid_x (1, w) integer pixel
    coordinates. Returns (B, J, h, w).
    """
    x = joints_xy[..., 0, None, None]
    y = joints_xy[..., 1, None, None]
    heatmap = torch.exp(-(((grid_x - x) / sigma) ** 2) / 2 - (((grid_y - y) / sigma) ** 2) / 2)
    return heatmap * joints_mask[..., None]
