"""KITTI label files: parsing, writing, round trip, line-numbered errors."""

import pytest

from tlkit.errors import DataError
from tlkit_detection.kitti import KittiObject, parse_line, read_label, read_label_dir, to_arrays, write_label

LINE = "Car 0.50 2 -1.57 599.41 156.40 629.75 189.25 2.85 2.63 12.34 0.47 1.49 69.44 -1.56"


def test_parse_all_fields():
    o = parse_line(LINE)
    assert o.type == "Car" and o.truncated == 0.5 and o.occluded == 2 and o.alpha == -1.57
    assert o.bbox == (599.41, 156.40, 629.75, 189.25)
    assert o.dimensions == (2.85, 2.63, 12.34) and o.location == (0.47, 1.49, 69.44) and o.rotation_y == -1.56
    assert o.score is None
    assert o.height == pytest.approx(32.85) and o.width == pytest.approx(30.34)
    assert parse_line(LINE + " 0.93").score == 0.93


def test_write_read_round_trip(tmp_path):
    objs = [
        parse_line(LINE),
        KittiObject("Pedestrian", (1.0, 2.0, 30.5, 80.25), score=0.123456),
        KittiObject("DontCare", (0, 0, 5, 5)),
    ]
    write_label(tmp_path / "000001.txt", objs)
    back = read_label(tmp_path / "000001.txt")
    assert [o.type for o in back] == ["Car", "Pedestrian", "DontCare"]
    assert back[0] == objs[0]
    assert back[1].bbox == (1.0, 2.0, 30.5, 80.25) and back[1].score == pytest.approx(0.123456)
    assert back[2].score is None


@pytest.mark.parametrize(
    "line, message",
    [
        ("Car 0 0 0 1 2 3", "expected 15 KITTI fields"),
        ("Car 0 0 0 1 2 x 4 0 0 0 0 0 0 0", "field 'x2' is not a number: 'x'"),
        ("Car 0 1.5 0 1 2 3 4 0 0 0 0 0 0 0", "'occluded' must be an integer"),
        ("Car 0 0 0 10 2 3 4 0 0 0 0 0 0 0", "x2 < x1"),
        ("Car 0 0 0 1 2 nan 4 0 0 0 0 0 0 0", "field 'x2' is not finite"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    p = tmp_path / "000007.txt"
    p.write_text(LINE + "\n\n" + line + "\n")
    with pytest.raises(DataError) as err:
        read_label(p)
    assert f"{p}:3:" in str(err.value) and message in str(err.value)


def test_label_dir_requires_scores_for_predictions(tmp_path):
    (tmp_path / "a.txt").write_text(LINE + " 0.9\n" + LINE + "\n")
    with pytest.raises(DataError, match=r"a.txt: object 2 \(Car\) has no score"):
        read_label_dir(tmp_path, require_scores=True)
    assert len(read_label_dir(tmp_path)["a"]) == 2
    with pytest.raises(DataError, match="label directory not found"):
        read_label_dir(tmp_path / "nope")


def test_to_arrays():
    a = to_arrays([parse_line(LINE + " 0.7"), KittiObject("Van", (0, 0, 1, 1), occluded=1)])
    assert a.boxes.shape == (2, 4) and list(a.types) == ["Car", "Van"]
    assert a.scores.tolist() == [0.7, 1.0] and a.occluded.tolist() == [2, 1]
    assert to_arrays([]).boxes.shape == (0, 4)
