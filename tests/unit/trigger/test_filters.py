"""Property filters on event properties and profile attributes."""

from services.trigger.filters import Condition, matches


def cond(**ops) -> Condition:
    return Condition.model_validate(ops)


class TestFilters:
    def test_plain_value_is_equality(self):
        """{plan: pro} matches only when the property equals 'pro'."""
        assert matches({"plan": "pro"}, {"plan": "pro"})
        assert not matches({"plan": "pro"}, {"plan": "basic"})

    def test_numeric_and_membership_operators(self):
        """gte, lt, in and contains compare as documented."""
        assert matches({"total": cond(gte=50, lt=100)}, {"total": 50})
        assert not matches({"total": cond(gte=50, lt=100)}, {"total": 100})
        assert matches({"country": cond(**{"in": ["IE", "GB"]})}, {"country": "IE"})
        assert matches({"tags": cond(contains="vip")}, {"tags": ["new", "vip"]})

    def test_dotted_names_reach_nested_objects(self):
        """cart.total reads the total inside the cart object."""
        assert matches({"cart.total": cond(gt=10)}, {"cart": {"total": 12.5}})

    def test_missing_property_fails_except_absence_checks(self):
        """A filter on a missing property fails, but exists: false and ne hold."""
        assert not matches({"coupon": "X"}, {})
        assert not matches({"total": cond(gt=1)}, {})
        assert matches({"coupon": cond(exists=False)}, {})
        assert matches({"coupon": cond(ne="X")}, {})

    def test_non_numbers_never_satisfy_numeric_bounds(self):
        """A text or boolean value is not greater than anything."""
        assert not matches({"total": cond(gt=1)}, {"total": "lots"})
        assert not matches({"total": cond(gt=0)}, {"total": True})
