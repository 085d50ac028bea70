"""Layouts: permutation algebra, the layout propagation behind `to-nhwc`, and transpose census."""
