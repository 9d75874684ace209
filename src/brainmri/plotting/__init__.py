"""Figure builders: each function returns a matplotlib Figure and never calls plt.show()."""
