"""A synthetic scene: a camera over a flat floor, people standing, walking or sitting on it, objects in front of
them, rendered; the people who qualify for annotation marked."""
import dataclasses

import numpy as np

from embedded.camera import Camera, global_orient, rot_y, sample_camera
from embedded.detections import OPENPOSE_IN_SMPL30
from embedded.poses import FAMILY_PROBS, POSE_FAMILIES, sample_betas, sample_body_pose
from embedded.render import render_scene
from embedded.textures import person_colours, random_colour, texture_pattern

DEFAULT_IMAGE_SIZE = (240, 320)  # (H, W) pixels
PERSON_HEIGHT = 1.7  # metres, only to choose distances from the wanted pixel height


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """How the scenes of one split are drawn and which people are annotated."""
    split_id: int  # second entry of the per-image seed
    people: tuple  # (min, max) people per image
    genders: tuple  # body models people are drawn from
    occluder_probs: tuple  # probabilities of 0, 1, 2 object occluders
    overlap_prob: float  # chance that a person is placed to overlap another one in the image
    max_occlusion: float  # annotated people: occlusion ratio at most this
    min_visible_joints: int  # annotated people: at least this many visible OpenPose joints inside the image


SPLITS = {
    "train": SplitSpec(0, (1, 4), ("neutral",), (0.4, 0.4, 0.2), 0.5, 0.7, 6),
    "test": SplitSpec(1, (1, 4), ("male", "female"), (0.3, 0.45, 0.25), 0.55, 0.85, 4),
    "crowd": SplitSpec(2, (3, 4), ("male", "female"), (0.5, 0.35, 0.15), 0.8, 0.85, 4),
}


@dataclasses.dataclass
class Person:
    """One person of a scene: parameters, posed geometry, appearance, and (after rendering) image-space labels."""
    gender: str
    family: str
    pose: np.ndarray  # (72,) axis-angle, camera frame root
    betas: np.ndarray  # (10,)
    trans: np.ndarray  # (3,) metres, camera frame
    vertices: np.ndarray  # (6890, 3) camera frame metres
    joints: np.ndarray  # (30, 3) J30, camera frame metres
    ground: np.ndarray  # (2,) world x, z of the pelvis on the floor
    radius: float  # horizontal reach from the pelvis, metres
    colours: dict = None  # region -> RGB in [0, 1]
    stripes: float = 0.0  # shirt stripe period (metres), 0 = plain
    # Filled after rendering:
    joints_img: np.ndarray = None  # (30, 2) pixels
    in_image: np.ndarray = None  # (30,) bool
    visible: np.ndarray = None  # (30,) bool: inside the image and not hidden by another surface
    hidden_by: np.ndarray = None  # (30,) int: the scene layer in front of a hidden joint (render_scene), else -1
    bbox: np.ndarray = None  # (4,) amodal tight box xywh, clipped to the image
    amodal_area: int = 0
    occlusion: float = 0.0  # 1 - visible / amodal pixels
    object_occlusion: float = 0.0  # share of the amodal pixels hidden by objects
    person_occlusion: float = 0.0  # share hidden by other people
    annotated: bool = False


@dataclasses.dataclass
class Occluder:
    """A textured object standing in the scene (a stool under a sitting person is one too)."""
    kind: str  # 'box', 'cylinder', 'panel', 'seat'
    vertices: np.ndarray  # (V, 3) camera frame
    faces: np.ndarray  # (F, 3)
    centre: np.ndarray  # (3,) world frame
    yaw: float
    colour: np.ndarray  # (3,) RGB [0, 1]
    texture: np.ndarray  # (64, 64) pattern in [0, 1]
    texture_scale: float  # metres per texture tile


def place_on_floor(person_vertices, person_joints, camera, ground):
    """Translation (3,) camera frame that puts the mesh (transl 0) with its pelvis above `ground` (world x, z) and
    its lowest point on the floor."""
    rotation = camera.world_to_camera
    verts_world = person_vertices @ rotation  # X_world = R^T X_camera, for row vectors
    root = person_joints[0] @ rotation
    shift = np.array([ground[0] - root[0], camera.height - verts_world[:, 1].max(), ground[1] - root[2]])
    return rotation @ shift


def _sample_people(rng, camera, bodies, spec):
    """People standing on the floor, pelvis projecting inside the image, apart from each other."""
    height, width = camera.size
    n_people = int(rng.integers(spec.people[0], spec.people[1] + 1))
    genders = [spec.genders[rng.integers(len(spec.genders))] for _ in range(n_people)]
    families = [POSE_FAMILIES[rng.choice(len(POSE_FAMILIES), p=FAMILY_PROBS)] for _ in range(n_people)]
    poses = np.zeros((n_people, 72))
    betas = np.round(np.stack([sample_betas(rng) for _ in range(n_people)]), 6)
    for i in range(n_people):
        poses[i, 3:] = sample_body_pose(rng, families[i])
        poses[i, :3] = global_orient(camera, rng.uniform(0, 2 * np.pi), np.deg2rad(rng.normal(0, 3, 3)) * [1, 0, 1])
    poses = np.round(poses, 6)
    verts, joints = np.zeros((n_people, 6890, 3)), np.zeros((n_people, 30, 3))
    for gender in set(genders):
        rows = [i for i, g in enumerate(genders) if g == gender]
        verts[rows], joints[rows] = bodies.forward(gender, poses[rows], betas[rows])

    people = []
    rotation = camera.world_to_camera
    for i in range(n_people):
        verts_world = verts[i] @ rotation
        root_world = joints[i, 0] @ rotation
        radius = float(np.hypot(*(verts_world[:, [0, 2]] - root_world[[0, 2]]).T).max())
        for _ in range(40):
            if people and rng.random() < spec.overlap_prob:
                # Partly in front of or behind someone already placed: person-person occlusion.
                other = people[rng.integers(len(people))]
                z = other.ground[1] + rng.choice([-1, 1]) * rng.uniform(0.9, 2.5)
                z = float(np.clip(z, 3.0, 10.0))
                u_other = camera.focal * other.ground[0] / other.ground[1] + camera.princpt[0]
                width_px = 0.3 * PERSON_HEIGHT * camera.focal / other.ground[1]
                u = u_other + rng.choice([-1, 1]) * rng.uniform(0.2, 1.0) * width_px
            else:
                z = float(np.clip(PERSON_HEIGHT * camera.focal / (rng.uniform(0.3, 0.85) * height), 3.0, 10.0))
                u = rng.uniform(0.1, 0.9) * width
            ground = np.array([(u - camera.princpt[0]) / camera.focal * z, z])
            if any(np.linalg.norm(ground - p.ground) < max(0.6, 0.6 * (radius + p.radius)) for p in people):
                continue
            trans = place_on_floor(verts[i], joints[i], camera, ground)
            root_px = camera.project(joints[i, 0] + trans)
            if not (0.02 * width <= root_px[0] <= 0.98 * width and 0.02 * height <= root_px[1] <= 0.98 * height):
                continue
            colours, stripes = person_colours(rng)
            trans = np.round(trans, 6)
            people.append(Person(genders[i], families[i], poses[i], betas[i], trans, verts[i] + trans,
                                 joints[i] + trans, ground, radius, colours, stripes))
            break
    return people


def _box_mesh(half_sizes):
    """Axis-aligned box centred at the origin (8 vertices, 12 triangles)."""
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * half_sizes
    faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                      [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return corners, faces


def _cylinder_mesh(radius, half_height, sides=16):
    """Vertical prism around the origin (y axis), closed by two fans."""
    angle = 2 * np.pi * np.arange(sides) / sides
    ring = np.stack([radius * np.cos(angle), np.zeros(sides), radius * np.sin(angle)], 1)
    verts = np.concatenate([ring - [0, half_height, 0], ring + [0, half_height, 0], [[0, -half_height, 0]],
                            [[0, half_height, 0]]])
    k, k1 = np.arange(sides), (np.arange(sides) + 1) % sides
    faces = np.concatenate([np.stack([k, k1, k1 + sides], 1), np.stack([k, k1 + sides, k + sides], 1),
                            np.stack([np.full(sides, 2 * sides), k1, k], 1),
                            np.stack([np.full(sides, 2 * sides + 1), k + sides, k1 + sides], 1)])
    return verts, faces


def _make_occluder(rng, camera, kind, centre, yaw, local_verts, faces):
    verts_world = local_verts @ rot_y(yaw).T + centre
    return Occluder(kind, verts_world @ camera.world_to_camera.T, faces, centre, float(yaw),
                    random_colour(rng, saturation=(0.05, 0.7), value=(0.25, 0.9)), texture_pattern(rng),
                    float(rng.uniform(0.3, 1.2)))


def _sample_occluders(rng, camera, people, spec):
    """0-2 objects standing on the floor between the camera and a person, not intersecting anyone."""
    occluders = []
    n_objects = int(rng.choice(len(spec.occluder_probs), p=spec.occluder_probs))
    for _ in range(n_objects):
        target = people[rng.integers(len(people))]
        for _ in range(10):
            kind = ("box", "cylinder", "panel")[rng.integers(3)]
            elevation = 0.0
            if kind == "box":
                half = np.array([rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.65), rng.uniform(0.15, 0.4)])
                local, faces = _box_mesh(half)
                footprint = np.hypot(half[0], half[2])
            elif kind == "cylinder":
                pillar = rng.random() < 0.4
                radius = rng.uniform(0.12, 0.3) if pillar else rng.uniform(0.2, 0.4)
                half_height = rng.uniform(1.1, 1.75) if pillar else rng.uniform(0.25, 0.55)
                local, faces = _cylinder_mesh(radius, half_height)
                half = np.array([radius, half_height, radius])
                footprint = radius
            else:
                half = np.array([rng.uniform(0.2, 0.75), rng.uniform(0.3, 0.95), 0.02])
                local, faces = _box_mesh(half)
                footprint = half[0]
                if rng.random() < 0.3:  # a sign board above the floor
                    elevation = rng.uniform(0.5, 1.2)
            z_far = target.ground[1] - 0.5 - footprint
            z_near = max(1.8, 0.4 * target.ground[1])
            if z_far <= z_near:
                break
            z = rng.uniform(z_near, z_far)
            u_target = camera.focal * target.ground[0] / target.ground[1] + camera.princpt[0]
            width_px = 0.3 * PERSON_HEIGHT * camera.focal / target.ground[1] + 2 * half[0] * camera.focal / z
            u = u_target + rng.uniform(-0.6, 0.6) * width_px
            centre = np.array([(u - camera.princpt[0]) / camera.focal * z, camera.height - elevation - half[1], z])
            if any(np.hypot(*(centre[[0, 2]] - p.ground)) < footprint + 0.3 for p in people):
                continue
            yaw = rng.uniform(-0.5, 0.5) if kind == "panel" else rng.uniform(0, np.pi)
            occluders.append(_make_occluder(rng, camera, kind, centre, yaw, local, faces))
            break
    return occluders


def _seat(rng, camera, person):
    """A stool under a sitting person's pelvis (a box from the floor to just under the buttocks), or None."""
    rotation = camera.world_to_camera
    verts_world = person.vertices @ rotation
    pelvis = person.joints[0] @ rotation
    near = np.hypot(*(verts_world[:, [0, 2]] - pelvis[[0, 2]]).T) < 0.15
    seat_top = verts_world[near, 1].max()
    seat_height = camera.height - seat_top
    if seat_height < 0.2:
        return None
    half = np.array([0.2, seat_height / 2, 0.2])
    local, faces = _box_mesh(half)
    centre = np.array([pelvis[0], camera.height - half[1], pelvis[2]])
    return _make_occluder(rng, camera, "seat", centre, rng.uniform(0, np.pi), local, faces)


@dataclasses.dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    camera: Camera
    people: list  # Person
    occluders: list  # Occluder
    front_layer: np.ndarray  # (H, W) int: person index, len(people) for the objects, -1 background (render_scene)


def make_scene(rng, bodies, split, image_size=DEFAULT_IMAGE_SIZE, max_attempts=50):
    """One image of `split` ('train', 'test' or 'crowd'): draws until at least one person qualifies for annotation
    (occlusion <= spec.max_occlusion, enough visible joints, box with area); the others stay unannotated bystanders.
    """
    spec = SPLITS[split]
    for _ in range(max_attempts):
        camera = sample_camera(rng, image_size)
        people = _sample_people(rng, camera, bodies, spec)
        if len(people) < spec.people[0] or not people:
            continue
        occluders = _sample_occluders(rng, camera, people, spec)
        for person in people:
            if person.family == "sitting":
                seat = _seat(rng, camera, person)
                if seat is not None:
                    occluders.append(seat)
        image, front_layer = render_scene(rng, camera, people, occluders, bodies)
        for person in people:
            visible_joints = int(person.visible[OPENPOSE_IN_SMPL30].sum())
            person.annotated = bool(person.occlusion <= spec.max_occlusion and visible_joints >= spec.min_visible_joints
                                    and person.bbox[2] > 1 and person.bbox[3] > 1)
        if any(p.annotated for p in people):
            return Scene(image, camera, people, occluders, front_layer)
    raise RuntimeError(f"no {split} scene with an annotatable person after {max_attempts} attempts")


def occlusion_type(person):
    """'none' (under 5 % hidden), else 'object' or 'person', whichever hides more."""
    if person.object_occlusion + person.person_occlusion < 0.05:
        return "none"
    return "object" if person.object_occlusion >= person.person_occlusion else "person"
