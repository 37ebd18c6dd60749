"""The planner: folding per layer, cut points across boards, plan.json."""
