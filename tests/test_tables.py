"""Table discovery on the shapes recommendation models keep their embeddings in."""

import pytest
import torch
from torch import nn

from lightning_recanalysis.model.tables import describe_tables, discover_tables


class PerField(nn.Module):
    def __init__(self):
        super().__init__()
        self.fields = nn.ModuleList([nn.Embedding(10, 4), nn.Embedding(20, 4)])
        self.bias = nn.Embedding(30, 1)  # per-feature bias: width 1, not a table to analyse
        self.mlp = nn.Linear(8, 1)


class Concatenated(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(5 + 7 + 11, 6)


class SharedWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.user = nn.Embedding(12, 4)
        self.item_tower = nn.Embedding(12, 4)
        self.item_tower.weight = self.user.weight  # tied


class Bags(nn.Module):
    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(40, 8, mode="sum")
        self.raw = nn.Parameter(torch.randn(15, 3))


def test_per_field_tables_and_bias_skipped():
    tables = discover_tables(PerField())
    assert [t.name for t in tables] == ["fields.0", "fields.1"]
    assert [(t.rows, t.width) for t in tables] == [(10, 4), (20, 4)]
    assert [f.name for t in tables for f in t.fields] == ["fields.0", "fields.1"]
    assert all(len(t.column_groups) == 1 for t in tables)


def test_concatenated_table_split_by_named_field_dims():
    (table,) = discover_tables(Concatenated(), field_dims={"user": 5, "item": 7, "context": 11})
    assert [(f.name, f.start, f.stop) for f in table.fields] == [("user", 0, 5), ("item", 5, 12), ("context", 12, 23)]
    view = next(table.views())
    assert view.name == "embedding"
    assert torch.equal(view.field_weight(table.fields[1]), table.parameter.detach()[5:12])
    (unnamed,) = discover_tables(Concatenated(), field_dims=[5, 7, 11])
    assert [f.cardinality for f in unnamed.fields] == [5, 7, 11]


def test_field_dims_that_do_not_add_up_name_the_table_and_both_numbers():
    with pytest.raises(ValueError, match=r"'embedding'.*add up to 22 rows but the table has 23 rows"):
        discover_tables(Concatenated(), field_dims=[5, 7, 10])


def test_shared_weight_counted_once_with_its_alias():
    (table,) = discover_tables(SharedWeight())
    assert table.name == "user" and table.aliases == ["item_tower"]


def test_embedding_bag_and_raw_parameter():
    tables = discover_tables(Bags(), parameters=["raw"])
    assert [(t.name, t.rows, t.width) for t in tables] == [("bag", 40, 8), ("raw", 15, 3)]
    with pytest.raises(ValueError, match="not in the model"):
        discover_tables(Bags(), parameters=["missing.weight"])


def test_column_groups_stem_style_and_multi_embedding():
    model = nn.Module()
    model.table = nn.Embedding(30, 12)
    (table,) = discover_tables(model, column_groups=["task_ctr", "task_cvr", "shared"])
    views = list(table.views())
    assert [v.name for v in views] == ["table[task_ctr]", "table[task_cvr]", "table[shared]"]
    assert [(v.group.start, v.group.stop) for v in views] == [(0, 4), (4, 8), (8, 12)]
    assert torch.equal(views[2].weight(), model.table.weight.detach()[:, 8:12])
    (multi,) = discover_tables(model, column_groups=3)
    assert [g.name for g in multi.column_groups] == ["set0", "set1", "set2"]
    with pytest.raises(ValueError, match="does not split into 5 equal column groups"):
        discover_tables(model, column_groups=5)


def test_per_table_options_by_name_pattern():
    model = nn.Module()
    model.user_emb = nn.Embedding(9, 4)
    model.item_emb = nn.Embedding(10, 4)
    tables = discover_tables(model, field_dims={"user_*": [4, 5]}, column_groups={"item_*": ["a", "b"]})
    by_name = {t.name: t for t in tables}
    assert [f.cardinality for f in by_name["user_emb"].fields] == [4, 5]
    assert [g.name for g in by_name["item_emb"].column_groups] == ["a", "b"]


def test_include_exclude_patterns():
    names = [t.name for t in discover_tables(PerField(), include=["fields.1"])]
    assert names == ["fields.1"]
    names = [t.name for t in discover_tables(PerField(), exclude=["*.0"])]
    assert names == ["fields.1"]


def test_no_table_is_an_error_that_says_how_to_point_at_one():
    with pytest.raises(ValueError, match=r"no embedding table found.*parameters="):
        discover_tables(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="skipped as narrower"):
        discover_tables(nn.Embedding(5, 1))


def test_inventory_lists_every_table():
    text = describe_tables(discover_tables(SharedWeight()))
    assert "| user | 12 x 4 |" in text and "item_tower" in text
