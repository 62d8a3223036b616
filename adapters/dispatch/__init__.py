"""Dispatch feeds: the police 110 CAD and the fire & ambulance 119/120 dispatch systems."""
