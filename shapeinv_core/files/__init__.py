"""Files that know nothing of the method: the run folder's layout (`runs`), safe image opening
(`images`) and file modes that match the user's other files (`modes`)."""
